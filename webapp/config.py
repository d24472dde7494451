"""Settings read from the environment (fixed names: README "Configuration").

``DASHBOARD_SECRET_KEY``, ``DASHBOARD_DATABASE_URL`` (default SQLite in
``instance/``), ``DASHBOARD_TARGETS``, ``DASHBOARD_ENV`` (development |
production), ``DASHBOARD_COOKIE_SECURE``, ``DASHBOARD_TRUSTED_PROXIES``,
``DASHBOARD_RATELIMIT_STORAGE_URL``, ``DASHBOARD_LOGIN_RATE_LIMIT``,
``DASHBOARD_MAX_CONTENT_LENGTH``, ``DASHBOARD_SESSION_IDLE_MINUTES``,
``DASHBOARD_SESSION_MAX_HOURS``;
single sign-on: ``DASHBOARD_OIDC_*`` and ``DASHBOARD_LOCAL_LOGIN`` (see
:func:`oidc_settings`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

# Flask-Limiter's counts in the dashboard database when no Redis is configured
# (the storage is webapp.ratelimit.DashboardDatabaseStorage)
DATABASE_RATELIMIT_STORAGE = "dashboard-db://"


class ConfigurationError(Exception):
    """The dashboard cannot start with this configuration (message says why)."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def secret_key(environ: Mapping[str, str], instance_path: Path, production: bool) -> str:
    """Return the session signing key.

    From ``DASHBOARD_SECRET_KEY``; in development, generated once and kept in
    ``instance/secret_key`` (mode 0600). Production refuses to run without it.

    :raises ConfigurationError: production mode without ``DASHBOARD_SECRET_KEY``.
    """
    key = environ.get("DASHBOARD_SECRET_KEY", "").strip()
    if key:
        return key
    if production:
        raise ConfigurationError(
            "DASHBOARD_SECRET_KEY is not set. In production (DASHBOARD_ENV=production) "
            "the dashboard refuses to start without it; generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'")
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    instance_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Written whole to a private temporary file, then linked into place: a
    # process starting at the same moment sees no key file or a whole one,
    # and the first link wins (the others read it).
    fd, temporary = tempfile.mkstemp(dir=instance_path, prefix=".secret_key-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key)
        os.link(temporary, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        os.unlink(temporary)
    return key


ROLE_NAMES = ("none", "viewer", "operator", "approver", "admin")


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


def oidc_settings(environ: Mapping[str, str]) -> dict:
    """Single sign-on settings: ``OIDC_ISSUER`` (None = off), ``OIDC_CLIENT_ID``,
    ``OIDC_CLIENT_SECRET``, ``OIDC_SCOPES``, ``OIDC_ROLES_CLAIM``,
    ``OIDC_ROLE_MAP`` (claim value → role), ``OIDC_DEFAULT_ROLE``,
    ``OIDC_NAME`` (the button's provider name), ``LOCAL_LOGIN`` (bool).

    :raises ConfigurationError: issuer without client id/secret (or the
        reverse), a bad role map or default role, local login off without
        single sign-on.
    """
    issuer = environ.get("DASHBOARD_OIDC_ISSUER", "").strip().rstrip("/") or None
    client_id = environ.get("DASHBOARD_OIDC_CLIENT_ID", "").strip() or None
    secret = environ.get("DASHBOARD_OIDC_CLIENT_SECRET", "").strip() or None
    if (issuer is None) != (client_id is None) or (issuer is None) != (secret is None):
        raise ConfigurationError("single sign-on needs all of DASHBOARD_OIDC_ISSUER, "
                                 "DASHBOARD_OIDC_CLIENT_ID and DASHBOARD_OIDC_CLIENT_SECRET")
    default_role = environ.get("DASHBOARD_OIDC_DEFAULT_ROLE", "none").strip() or "none"
    if default_role not in ROLE_NAMES:
        raise ConfigurationError(f"DASHBOARD_OIDC_DEFAULT_ROLE must be one of "
                                 f"{', '.join(ROLE_NAMES)}, got {default_role!r}")
    local = environ.get("DASHBOARD_LOCAL_LOGIN", "on").strip().lower()
    if local not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"DASHBOARD_LOCAL_LOGIN must be on or off, got {local!r}")
    local_login = local in ("on", "true", "1", "yes")
    if not local_login and issuer is None:
        raise ConfigurationError("DASHBOARD_LOCAL_LOGIN=off needs single sign-on "
                                 "(DASHBOARD_OIDC_ISSUER...): nobody could log in")
    return {
        "OIDC_ISSUER": issuer,
        "OIDC_CLIENT_ID": client_id,
        "OIDC_CLIENT_SECRET": secret,
        "OIDC_SCOPES": environ.get("DASHBOARD_OIDC_SCOPES", "").strip()
        or "openid profile email",
        "OIDC_ROLES_CLAIM": environ.get("DASHBOARD_OIDC_ROLES_CLAIM", "").strip() or "groups",
        "OIDC_ROLE_MAP": parse_role_map(environ.get("DASHBOARD_OIDC_ROLE_MAP", "")),
        "OIDC_DEFAULT_ROLE": default_role,
        "OIDC_NAME": environ.get("DASHBOARD_OIDC_NAME", "").strip() or "single sign-on",
        "LOCAL_LOGIN": local_login,
    }


SESSION_IDLE_MINUTES = 60  # default: a session unused this long ends
SESSION_MAX_HOURS = 12  # default: a session ends this long after its login, used or not


def positive_number(environ: Mapping[str, str], name: str, default: float) -> float:
    """The number in ``environ[name]`` (``default`` when unset or empty).

    :raises ConfigurationError: not a number, or not above 0.
    """
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a number above 0, got {text!r}")
    return value


def session_settings(environ: Mapping[str, str]) -> dict:
    """Session lifetime settings: ``SESSION_IDLE_MINUTES`` (a session unused
    this long ends), ``SESSION_MAX_HOURS`` (a session ends this long after
    its login), enforced by :mod:`webapp.auth_setup`; the signed cookie and
    Flask-Login's remember cookie expire at the absolute limit too.

    :raises ConfigurationError: see :func:`positive_number`.
    """
    idle = positive_number(environ, "DASHBOARD_SESSION_IDLE_MINUTES", SESSION_IDLE_MINUTES)
    hours = positive_number(environ, "DASHBOARD_SESSION_MAX_HOURS", SESSION_MAX_HOURS)
    return {"SESSION_IDLE_MINUTES": idle, "SESSION_MAX_HOURS": hours,
            "PERMANENT_SESSION_LIFETIME": timedelta(hours=hours),
            "REMEMBER_COOKIE_DURATION": timedelta(hours=hours)}


def job_standbys(environ: Mapping[str, str], name: str = "DASHBOARD_JOB_STANDBYS") -> int:
    """``DASHBOARD_JOB_STANDBYS``: how many warm job processes each web
    process keeps for local jobs; ``DASHBOARD_AGENT_STANDBYS`` (``name``):
    how many agent fork servers it keeps for read operations (plans, offline
    SQL, drift; one per target interpreter). Default 2, 0 to start every one
    cold.

    :raises ConfigurationError: not a whole number from 0 to 8.
    """
    raw = environ.get(name, "").strip() or "2"
    if not raw.isdigit() or int(raw) > 8:
        raise ConfigurationError(f"{name} must be a whole number from 0 to 8, got {raw!r}")
    return int(raw)


def engine_options(database_url: str) -> dict:
    """SQLAlchemy engine options for the dashboard's own database at
    ``database_url``: connections checked before use; on SQLite, a 30 s wait
    for the write lock, as several gunicorn workers and job processes write
    to one file."""
    return {"pool_pre_ping": True, **(
        {"connect_args": {"timeout": 30}} if database_url.startswith("sqlite") else {})}


def settings_from_environment(environ: Mapping[str, str], instance_path: Path) -> dict:
    """Build the Flask config mapping from environment variables.

    :raises ConfigurationError: see :func:`secret_key`, or a bad ``DASHBOARD_ENV``.
    """
    env = environ.get("DASHBOARD_ENV", "development").strip() or "development"
    if env not in ("development", "production"):
        raise ConfigurationError(f"DASHBOARD_ENV must be development or production, got {env!r}")
    production = env == "production"
    database_url = environ.get("DASHBOARD_DATABASE_URL") or \
        f"sqlite:///{instance_path / 'dashboard.db'}"
    broker = environ.get("DASHBOARD_BROKER_URL") or ""
    ratelimit_storage = environ.get("DASHBOARD_RATELIMIT_STORAGE_URL") or (
        broker if broker.startswith(("redis://", "rediss://")) else DATABASE_RATELIMIT_STORAGE)
    cookie_secure = _truthy(environ.get("DASHBOARD_COOKIE_SECURE")) if \
        "DASHBOARD_COOKIE_SECURE" in environ else production
    return {
        "DASHBOARD_ENV": env,
        "SECRET_KEY": secret_key(environ, instance_path, production),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database_url),
        "TARGETS_FILE": environ.get("DASHBOARD_TARGETS") or None,
        # Celery broker (redis://...): jobs go to workers beside the databases;
        # unset, each job runs in a local process
        "BROKER_URL": environ.get("DASHBOARD_BROKER_URL") or None,
        # with a broker: the queue whose worker advances fleet rollouts (plans the
        # next steps, so it must reach every target's database, like the web host)
        "ROLLOUT_QUEUE": environ.get("DASHBOARD_ROLLOUT_QUEUE") or None,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": cookie_secure,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": cookie_secure,
        "WTF_CSRF_TIME_LIMIT": None,  # token lives as long as the session
        "WEBHOOK_URL": environ.get("DASHBOARD_WEBHOOK_URL") or None,
        "REQUEST_TTL_HOURS": float(environ.get("DASHBOARD_REQUEST_TTL_HOURS", "24") or 24),
        "TRUSTED_PROXIES": int(environ.get("DASHBOARD_TRUSTED_PROXIES", "0") or 0),
        # Flask-Limiter (webapp/ratelimit.py): in Redis when there is one, else in
        # the dashboard database; either way shared by every worker and host
        "RATELIMIT_STORAGE_URI": ratelimit_storage,
        "RATELIMIT_KEY_PREFIX": environ.get("DASHBOARD_RATELIMIT_PREFIX") or "alembic-dashboard",
        "RATELIMIT_HEADERS_ENABLED": True,
        "LOGIN_RATE_LIMIT": environ.get("DASHBOARD_LOGIN_RATE_LIMIT") or "30 per minute",
        # request bodies (forms, JSON) above this answer 413
        "MAX_CONTENT_LENGTH": int(environ.get("DASHBOARD_MAX_CONTENT_LENGTH") or 1024 * 1024),
        # local jobs: job processes each web process keeps waiting, warm, ahead
        # of their jobs (webapp.services.launchers.LocalProcessLauncher); 0: none
        "JOB_STANDBYS": job_standbys(environ),
        # agent fork servers each process keeps for read operations (webapp.core.runner)
        "AGENT_STANDBYS": job_standbys(environ, "DASHBOARD_AGENT_STANDBYS"),
        **session_settings(environ),
        **oidc_settings(environ),
    }
