"""The ``DASHBOARD_*`` environment variables as one validated schema (pydantic).

:class:`EnvironmentSettings` holds what the environment says, typed and
checked, with the messages of README "Configuration"; :mod:`webapp.config`
turns it into the Flask config. Every variable is text; an empty one counts
as unset (its default applies), except ``DASHBOARD_COOKIE_SECURE``, where an
empty value says "off".
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ROLE_NAMES = ("none", "viewer", "operator", "approver", "admin")
SESSION_IDLE_MINUTES = 60  # default: a session unused this long ends
SESSION_MAX_HOURS = 12  # default: a session ends this long after its login, used or not
_ON = ("on", "true", "1", "yes")
_OFF = ("off", "false", "0", "no")


class ConfigurationError(Exception):
    """The dashboard cannot start with this configuration (message says why)."""


def parse_role_map(text: str) -> dict[str, str]:
    """``"dba=approver,devs=operator"`` → ``{"dba": "approver", "devs": "operator"}``
    (claim value → role; whitespace around items is ignored).

    :raises ConfigurationError: an item without ``=`` or an unknown role.
    """
    result = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        value, sep, role = item.rpartition("=")
        value, role = value.strip(), role.strip()
        if not sep or not value:
            raise ConfigurationError(f"DASHBOARD_OIDC_ROLE_MAP: {item!r} is not VALUE=ROLE "
                                     "(e.g. dba=approver,devs=operator)")
        if role not in ROLE_NAMES:
            raise ConfigurationError(f"DASHBOARD_OIDC_ROLE_MAP: {role!r} is not a role "
                                     f"({', '.join(ROLE_NAMES)})")
        result[value] = role
    return result


def _positive(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a number above 0, got {text!r}")
    return value


def whole_number(name: str, text: str) -> int:
    """``text`` of variable ``name`` as a whole number within its limits
    (:data:`_WHOLE`).

    :raises ConfigurationError: not a whole number, or outside the limits.
    """
    low, high = _WHOLE[name]
    if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise ConfigurationError(f"{name} must be a whole number {span}, got {text!r}")
    return int(text)


# whole-number variables: (lowest, highest or None)
_WHOLE = {"DASHBOARD_TRUSTED_PROXIES": (0, None), "DASHBOARD_MAX_CONTENT_LENGTH": (1, None),
          "DASHBOARD_JOB_STANDBYS": (0, 8), "DASHBOARD_AGENT_STANDBYS": (0, 8),
          "DASHBOARD_SMTP_PORT": (1, 65535)}


def email_address(text: str) -> str:
    """``text`` as a normalised email address (syntax only: no DNS lookup),
    by ``email-validator``.

    :raises ValueError: not an email address (the message says why).
    """
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


class EnvironmentSettings(BaseModel):
    """What the ``DASHBOARD_*`` variables say (README "Configuration"), one
    field per variable (its alias); build with :meth:`from_environ`.

    Fields are declared in the order their checks report: the first
    problem found is the one a :class:`ConfigurationError` names.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    env: str = Field("development", alias="DASHBOARD_ENV")
    secret_key: str | None = Field(None, alias="DASHBOARD_SECRET_KEY")
    database_url: str | None = Field(None, alias="DASHBOARD_DATABASE_URL")
    targets: str | None = Field(None, alias="DASHBOARD_TARGETS")
    broker_url: str | None = Field(None, alias="DASHBOARD_BROKER_URL")
    rollout_queue: str | None = Field(None, alias="DASHBOARD_ROLLOUT_QUEUE")
    cookie_secure: bool | None = Field(None, alias="DASHBOARD_COOKIE_SECURE")
    webhook_url: str | None = Field(None, alias="DASHBOARD_WEBHOOK_URL")
    request_ttl_hours: float = Field(24.0, alias="DASHBOARD_REQUEST_TTL_HOURS")
    trusted_proxies: int = Field(0, alias="DASHBOARD_TRUSTED_PROXIES")
    ratelimit_storage_url: str | None = Field(None, alias="DASHBOARD_RATELIMIT_STORAGE_URL")
    ratelimit_prefix: str = Field("alembic-dashboard", alias="DASHBOARD_RATELIMIT_PREFIX")
    login_rate_limit: str = Field("30 per minute", alias="DASHBOARD_LOGIN_RATE_LIMIT")
    max_content_length: int = Field(1024 * 1024, alias="DASHBOARD_MAX_CONTENT_LENGTH")
    job_standbys: int = Field(2, alias="DASHBOARD_JOB_STANDBYS")
    agent_standbys: int = Field(2, alias="DASHBOARD_AGENT_STANDBYS")
    session_idle_minutes: float = Field(SESSION_IDLE_MINUTES,
                                        alias="DASHBOARD_SESSION_IDLE_MINUTES")
    session_max_hours: float = Field(SESSION_MAX_HOURS, alias="DASHBOARD_SESSION_MAX_HOURS")
    oidc_issuer: str | None = Field(None, alias="DASHBOARD_OIDC_ISSUER")
    oidc_client_id: str | None = Field(None, alias="DASHBOARD_OIDC_CLIENT_ID")
    oidc_client_secret: str | None = Field(None, alias="DASHBOARD_OIDC_CLIENT_SECRET")
    oidc_default_role: str = Field("none", alias="DASHBOARD_OIDC_DEFAULT_ROLE")
    local_login: bool = Field(True, alias="DASHBOARD_LOCAL_LOGIN")
    oidc_scopes: str = Field("openid profile email", alias="DASHBOARD_OIDC_SCOPES")
    oidc_roles_claim: str = Field("groups", alias="DASHBOARD_OIDC_ROLES_CLAIM")
    oidc_role_map: dict[str, str] = Field(default_factory=dict, alias="DASHBOARD_OIDC_ROLE_MAP")
    oidc_name: str = Field("single sign-on", alias="DASHBOARD_OIDC_NAME")
    smtp_host: str | None = Field(None, alias="DASHBOARD_SMTP_HOST")
    smtp_port: int = Field(587, alias="DASHBOARD_SMTP_PORT")
    smtp_username: str | None = Field(None, alias="DASHBOARD_SMTP_USERNAME")
    smtp_password: str | None = Field(None, alias="DASHBOARD_SMTP_PASSWORD")
    smtp_from: str | None = Field(None, alias="DASHBOARD_SMTP_FROM")
    smtp_starttls: bool = Field(True, alias="DASHBOARD_SMTP_STARTTLS")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EnvironmentSettings:
        """Validate the ``DASHBOARD_*`` entries of ``environ`` (any mapping of
        text, e.g. ``os.environ``; others are ignored).

        :raises ConfigurationError: the first variable that is wrong, and why.
        """
        given = {name: value.strip() for name, value in environ.items()
                 if name.startswith("DASHBOARD_")
                 and (value.strip() or name == "DASHBOARD_COOKIE_SECURE")}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:  # a wrong type (the validators raise ConfigurationError)
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigurationError(f"{where}: {first['msg']}") from None

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, text: str) -> str:
        if text not in ("development", "production"):
            raise ConfigurationError(
                f"DASHBOARD_ENV must be development or production, got {text!r}")
        return text

    @field_validator("cookie_secure", mode="before")
    @classmethod
    def _cookie_secure(cls, text: str) -> bool:
        return text.lower() in _ON

    @field_validator("request_ttl_hours", "session_idle_minutes", "session_max_hours",
                     mode="before")
    @classmethod
    def _positive_number(cls, text, info) -> float:
        if not isinstance(text, str):
            return text
        return _positive(cls.model_fields[info.field_name].alias, text)

    @field_validator("trusted_proxies", "max_content_length", "job_standbys",
                     "agent_standbys", "smtp_port", mode="before")
    @classmethod
    def _whole_number(cls, text, info) -> int:
        if not isinstance(text, str):
            return text
        return whole_number(cls.model_fields[info.field_name].alias, text)

    @field_validator("oidc_issuer", mode="before")
    @classmethod
    def _issuer(cls, text: str) -> str | None:
        return text.rstrip("/") or None

    @field_validator("oidc_default_role", mode="before")
    @classmethod
    def _default_role(cls, text: str) -> str:
        if text not in ROLE_NAMES:
            raise ConfigurationError(f"DASHBOARD_OIDC_DEFAULT_ROLE must be one of "
                                     f"{', '.join(ROLE_NAMES)}, got {text!r}")
        return text

    @field_validator("local_login", mode="before")
    @classmethod
    def _local_login(cls, text: str) -> bool:
        if text.lower() not in _ON + _OFF:
            raise ConfigurationError(f"DASHBOARD_LOCAL_LOGIN must be on or off, got {text!r}")
        return text.lower() in _ON

    @field_validator("smtp_starttls", mode="before")
    @classmethod
    def _smtp_starttls(cls, text: str) -> bool:
        if text.lower() not in _ON + _OFF:
            raise ConfigurationError(f"DASHBOARD_SMTP_STARTTLS must be on or off, got {text!r}")
        return text.lower() in _ON

    @field_validator("smtp_from", mode="before")
    @classmethod
    def _smtp_from(cls, text: str) -> str:
        try:
            return email_address(text)
        except ValueError as exc:
            raise ConfigurationError(f"DASHBOARD_SMTP_FROM is not an email address: "
                                     f"{exc}") from None

    @field_validator("oidc_role_map", mode="before")
    @classmethod
    def _role_map(cls, text) -> dict[str, str]:
        return parse_role_map(text) if isinstance(text, str) else text

    @model_validator(mode="after")
    def _single_sign_on(self) -> EnvironmentSettings:
        parts = (self.oidc_issuer, self.oidc_client_id, self.oidc_client_secret)
        if any(part is None for part in parts) and any(part is not None for part in parts):
            raise ConfigurationError("single sign-on needs all of DASHBOARD_OIDC_ISSUER, "
                                     "DASHBOARD_OIDC_CLIENT_ID and DASHBOARD_OIDC_CLIENT_SECRET")
        if self.smtp_host is not None and self.smtp_from is None:
            raise ConfigurationError("DASHBOARD_SMTP_HOST needs DASHBOARD_SMTP_FROM (the "
                                     "sender address of notification mails)")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ConfigurationError("DASHBOARD_SMTP_USERNAME and DASHBOARD_SMTP_PASSWORD go "
                                     "together (set both, or neither for no login)")
        if not self.local_login and self.oidc_issuer is None:
            raise ConfigurationError("DASHBOARD_LOCAL_LOGIN=off needs single sign-on "
                                     "(DASHBOARD_OIDC_ISSUER...): nobody could log in")
        return self
