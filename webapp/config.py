"""Settings read from the environment (fixed names: README "Configuration").

``DASHBOARD_SECRET_KEY``, ``DASHBOARD_DATABASE_URL`` (default SQLite in
``instance/``), ``DASHBOARD_TARGETS``, ``DASHBOARD_ENV`` (development |
production), ``DASHBOARD_COOKIE_SECURE``, ``DASHBOARD_TRUSTED_PROXIES``,
``DASHBOARD_RATELIMIT_STORAGE_URL``, ``DASHBOARD_LOGIN_RATE_LIMIT``,
``DASHBOARD_MAX_CONTENT_LENGTH``, ``DASHBOARD_SESSION_IDLE_MINUTES``,
``DASHBOARD_SESSION_MAX_HOURS``; notification mails: ``DASHBOARD_SMTP_*``
(see :func:`_smtp`);
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

# re-exported: the settings' schema lives in webapp.settings_schema
from .settings_schema import (
    ROLE_NAMES,
    SESSION_IDLE_MINUTES,
    SESSION_MAX_HOURS,
    ConfigurationError,
    EnvironmentSettings,
    parse_role_map,
)

__all__ = ["ROLE_NAMES", "SESSION_IDLE_MINUTES", "SESSION_MAX_HOURS", "ConfigurationError",
           "EnvironmentSettings", "parse_role_map", "secret_key", "oidc_settings",
           "job_standbys", "engine_options", "settings_from_environment"]

# Flask-Limiter's counts in the dashboard database when no Redis is configured
# (the storage is webapp.ratelimit.DashboardDatabaseStorage)
DATABASE_RATELIMIT_STORAGE = "dashboard-db://"


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


def oidc_settings(environ: Mapping[str, str]) -> dict:
    """Single sign-on settings: ``OIDC_ISSUER`` (None = off), ``OIDC_CLIENT_ID``,
    ``OIDC_CLIENT_SECRET``, ``OIDC_SCOPES``, ``OIDC_ROLES_CLAIM``,
    ``OIDC_ROLE_MAP`` (claim value → role), ``OIDC_DEFAULT_ROLE``,
    ``OIDC_NAME`` (the button's provider name), ``LOCAL_LOGIN`` (bool).

    :raises ConfigurationError: issuer without client id/secret (or the
        reverse), a bad role map or default role, local login off without
        single sign-on (:class:`EnvironmentSettings`).
    """
    return _oidc(EnvironmentSettings.from_environ(environ))


def _oidc(settings: EnvironmentSettings) -> dict:
    return {"OIDC_ISSUER": settings.oidc_issuer, "OIDC_CLIENT_ID": settings.oidc_client_id,
            "OIDC_CLIENT_SECRET": settings.oidc_client_secret,
            "OIDC_SCOPES": settings.oidc_scopes, "OIDC_ROLES_CLAIM": settings.oidc_roles_claim,
            "OIDC_ROLE_MAP": dict(settings.oidc_role_map),
            "OIDC_DEFAULT_ROLE": settings.oidc_default_role, "OIDC_NAME": settings.oidc_name,
            "LOCAL_LOGIN": settings.local_login}


def _session(settings: EnvironmentSettings) -> dict:
    """Session lifetime settings: ``SESSION_IDLE_MINUTES`` (a session unused
    this long ends), ``SESSION_MAX_HOURS`` (a session ends this long after
    its login), enforced by :mod:`webapp.auth_setup`; the signed cookie and
    Flask-Login's remember cookie expire at the absolute limit too."""
    hours = settings.session_max_hours
    return {"SESSION_IDLE_MINUTES": settings.session_idle_minutes, "SESSION_MAX_HOURS": hours,
            "PERMANENT_SESSION_LIFETIME": timedelta(hours=hours),
            "REMEMBER_COOKIE_DURATION": timedelta(hours=hours)}


def _smtp(settings: EnvironmentSettings) -> dict:
    """Notification mail settings (:mod:`webapp.services.mail`): ``SMTP_HOST``
    (None: no mail), ``SMTP_PORT`` (default 587), ``SMTP_USERNAME`` and
    ``SMTP_PASSWORD`` (both or neither; the password is never logged),
    ``SMTP_FROM`` (the sender address), ``SMTP_STARTTLS`` (default on)."""
    return {"SMTP_HOST": settings.smtp_host, "SMTP_PORT": settings.smtp_port,
            "SMTP_USERNAME": settings.smtp_username, "SMTP_PASSWORD": settings.smtp_password,
            "SMTP_FROM": settings.smtp_from, "SMTP_STARTTLS": settings.smtp_starttls}


def job_standbys(environ: Mapping[str, str], name: str = "DASHBOARD_JOB_STANDBYS") -> int:
    """``DASHBOARD_JOB_STANDBYS``: how many warm job processes each web
    process keeps for local jobs; ``DASHBOARD_AGENT_STANDBYS`` (``name``):
    how many agent fork servers it keeps for read operations (plans, offline
    SQL, drift; one per target interpreter). Default 2, 0 to start every one
    cold.

    :raises ConfigurationError: not a whole number from 0 to 8.
    """
    settings = EnvironmentSettings.from_environ({name: environ.get(name, "")})
    return settings.agent_standbys if name == "DASHBOARD_AGENT_STANDBYS" else settings.job_standbys


def engine_options(database_url: str) -> dict:
    """SQLAlchemy engine options for the dashboard's own database at
    ``database_url``: connections checked before use; on SQLite, a 30 s wait
    for the write lock, as several gunicorn workers and job processes write
    to one file."""
    return {"pool_pre_ping": True, **(
        {"connect_args": {"timeout": 30}} if database_url.startswith("sqlite") else {})}


def settings_from_environment(environ: Mapping[str, str], instance_path: Path) -> dict:
    """Build the Flask config mapping from environment variables
    (validated by :class:`EnvironmentSettings`).

    :raises ConfigurationError: the first wrong variable (see
        :class:`EnvironmentSettings`), or see :func:`secret_key`.
    """
    settings = EnvironmentSettings.from_environ(environ)
    production = settings.env == "production"
    database_url = settings.database_url or f"sqlite:///{instance_path / 'dashboard.db'}"
    broker = settings.broker_url or ""
    ratelimit_storage = settings.ratelimit_storage_url or (
        broker if broker.startswith(("redis://", "rediss://")) else DATABASE_RATELIMIT_STORAGE)
    cookie_secure = production if settings.cookie_secure is None else settings.cookie_secure
    return {
        "DASHBOARD_ENV": settings.env,
        "SECRET_KEY": secret_key(environ, instance_path, production),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database_url),
        "TARGETS_FILE": settings.targets,
        # Celery broker (redis://...): jobs go to workers beside the databases;
        # unset, each job runs in a local process
        "BROKER_URL": settings.broker_url,
        # with a broker: the queue whose worker advances fleet rollouts (plans the
        # next steps, so it must reach every target's database, like the web host)
        "ROLLOUT_QUEUE": settings.rollout_queue,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": cookie_secure,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": cookie_secure,
        "WTF_CSRF_TIME_LIMIT": None,  # token lives as long as the session
        "WEBHOOK_URL": settings.webhook_url,
        "REQUEST_TTL_HOURS": settings.request_ttl_hours,
        "TRUSTED_PROXIES": settings.trusted_proxies,
        # Flask-Limiter (webapp/ratelimit.py): in Redis when there is one, else in
        # the dashboard database; either way shared by every worker and host
        "RATELIMIT_STORAGE_URI": ratelimit_storage,
        "RATELIMIT_KEY_PREFIX": settings.ratelimit_prefix,
        "RATELIMIT_HEADERS_ENABLED": True,
        "LOGIN_RATE_LIMIT": settings.login_rate_limit,
        # request bodies (forms, JSON) above this answer 413
        "MAX_CONTENT_LENGTH": settings.max_content_length,
        # local jobs: job processes each web process keeps waiting, warm, ahead
        # of their jobs (webapp.services.launchers.LocalProcessLauncher); 0: none
        "JOB_STANDBYS": settings.job_standbys,
        # agent fork servers each process keeps for read operations (webapp.core.runner)
        "AGENT_STANDBYS": settings.agent_standbys,
        **_session(settings),
        **_oidc(settings),
        **_smtp(settings),
    }
