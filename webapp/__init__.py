"""Alembic Dashboard: see, plan and run Alembic migrations from the browser.

:func:`create_app` is the application factory (``wsgi.py`` calls it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from flask import Flask
from jinja2 import FileSystemBytecodeCache

from .config import ConfigurationError, engine_options, settings_from_environment
from .core.targets import TargetsFileError, configured_secrets, register_secrets
from .extensions import csrf, init_db, login_manager

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# unusable settings or targets file: one line, not a traceback (wsgi.py, gunicorn)
STARTUP_ERRORS = (ConfigurationError, TargetsFileError)


def _instance_path() -> str:
    return os.environ.get("DASHBOARD_INSTANCE_PATH") or str(PROJECT_ROOT / "instance")


def startup_message(exc: Exception) -> str:
    """The one line printed instead of a traceback for a start-up error
    (:data:`STARTUP_ERRORS`)."""
    return f"Alembic Dashboard cannot start: {' '.join(str(exc).split())}"


def startup_problem() -> str | None:
    """One line saying why the dashboard cannot start with the environment's
    settings and targets file (for gunicorn's master to print before any
    worker starts), or None when they are usable."""
    from .core.targets import load_targets

    try:
        config = settings_from_environment(dict(os.environ), Path(_instance_path()))
        if config.get("TARGETS_FILE"):
            load_targets(config["TARGETS_FILE"])
    except STARTUP_ERRORS as exc:
        return startup_message(exc)
    return None


def create_app(config_overrides: Mapping | None = None) -> Flask:
    """Build the Flask app.

    Settings come from the environment (:mod:`webapp.config`), then
    ``config_overrides`` (tests). Targets are loaded now, so an invalid
    targets file stops the start with a message naming file, line and key.

    :raises webapp.config.ConfigurationError: unusable settings.
    :raises webapp.core.targets.TargetsFileError: invalid targets file.
    """
    instance_path = _instance_path()
    app = Flask(__name__, instance_path=str(Path(instance_path).resolve()),
                template_folder=str(PROJECT_ROOT / "templates"),
                static_folder=str(PROJECT_ROOT / "static"))
    # compiled templates shared by this user's processes (gunicorn workers, job
    # processes, the test suite's many apps) in Jinja's private per-user
    # temporary folder, checked against each template's source
    app.jinja_options = {**app.jinja_options, "bytecode_cache": FileSystemBytecodeCache()}
    overrides = dict(config_overrides or {})
    environ = dict(os.environ)
    if overrides.get("SECRET_KEY"):
        environ["DASHBOARD_SECRET_KEY"] = overrides["SECRET_KEY"]
    app.config.from_mapping(settings_from_environment(environ, Path(app.instance_path)))
    app.config.from_mapping(overrides)
    if "SQLALCHEMY_ENGINE_OPTIONS" not in overrides:  # they follow an overridden URL
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
            app.config["SQLALCHEMY_DATABASE_URI"])
    from .security import RowIdConverter, secure_instance_folder

    secure_instance_folder(Path(app.instance_path), app.config["SQLALCHEMY_DATABASE_URI"])
    app.url_map.converters["int"] = RowIdConverter

    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    init_db(app)
    csrf.init_app(app)
    login_manager.init_app(app)

    from .services import housekeeping, launchers, request_mail, rollout_advance
    from .services.catalog import Catalog

    launchers.init_app(app)  # how jobs run: decided here, once (BROKER_URL, JOB_LAUNCHER)
    from .core.runner import configure_agent_forkservers

    configure_agent_forkservers(app.config["AGENT_STANDBYS"])  # warm agents for reads
    rollout_advance.subscribe()  # job and request ends (services.events) reach rollouts
    request_mail.subscribe()  # a request waiting for someone: mail them (DASHBOARD_SMTP_*)
    housekeeping.init_app(app)  # reads trigger it at most every 2 s (or: flask housekeeping)

    catalog = Catalog.from_config(app.config, Path(app.instance_path))
    app.extensions["alembic_dashboard"] = catalog
    # every job log, agent output and error is scrubbed of all of these
    register_secrets(configured_secrets(app.config, environ, catalog.targets.values()))

    from . import auth_setup, cli, ratelimit, readiness, security
    from .api import bp as api_bp
    from .services import sso
    from .views import (
        admin,
        audit,
        auth,
        authoring,
        changes,
        errors,
        jobs,
        main,
        requests,
        rollouts,
        targets,
    )
    from .views import sso as sso_views

    auth_setup.init_app(app)
    security.init_app(app)
    sso.init_app(app)
    app.register_blueprint(sso_views.bp)
    errors.init_app(app)
    readiness.init_app(app)  # /readyz; 503 when the dashboard database is down
    app.register_blueprint(auth.bp)
    app.register_blueprint(main.bp)
    app.register_blueprint(targets.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(requests.bp)
    app.register_blueprint(authoring.bp)
    app.register_blueprint(changes.bp)
    app.register_blueprint(rollouts.bp)
    app.register_blueprint(api_bp)
    ratelimit.init_app(app)
    cli.init_app(app)
    return app
