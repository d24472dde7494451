"""The target's Alembic configuration, as Alembic's own commands would build it."""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager, nullcontext

from . import alembic_private
from .guards import ConnectionRefused

_APP = None
VERSION_APPLY_HOOKS: list = []  # callables(step_info, heads) told of every applied step
# callables(environment_context, connection) told of the connection env.py
# hands to context.configure (online only), once configured: the lock guard
CONFIGURE_HOOKS: list = []
_APP_MARK = "alembic_dashboard_app_read_only"  # connection_record.info key
_POOL_EVENTS = ("first_connect", "connect", "checkout")
# what SQLite, PostgreSQL and MySQL/MariaDB say when a read-only connection is asked to write
_WRITE_REFUSALS = ("readonly database", "read-only transaction", "read only transaction",
                   "not authorized", "query_only")


class AppWroteOnRead(Exception):
    """A Flask-Migrate app's factory wrote (or tried to) while the dashboard only read."""


class AppConnectionRefused(ConnectionRefused):
    """A connection opened while the app was created could not be made read-only."""


APP_REFUSED = ("the app opened {where} while it was created for a read, a connection the "
               "dashboard cannot make read-only")


def app_may_write(request: dict) -> bool:
    """Whether the op of ``request`` may create the app with connections that
    write: only the locked online run (``run``, ``command`` without ``sql``).
    Every other op — status's ``database_url``, history's ``script_directory``
    and ``identifiers``, plans, offline SQL, previews — is a read."""
    op = request.get("op")
    return op == "run" or (op == "command" and not request.get("sql"))


@contextmanager
def read_only_app_connections():
    """While a Flask-Migrate app is imported and created for a read, every
    SQLAlchemy connection opened is made read-only in the database before
    its first statement (SQLite ``PRAGMA query_only`` and no ATTACH,
    PostgreSQL/MySQL ``SET SESSION ... READ ONLY``: :func:`.guards.vet`), so a
    factory that migrates its database on start (``flask_migrate.upgrade()``
    in ``create_app``) is refused by the database instead of writing.

    The app names its own database (its URL is what ``database_url`` asks),
    so the rule is "any database, read-only"; when a read path's own rule is
    already in force (:func:`.guards.connections_follow`: a plan, offline SQL,
    a preview) that stricter rule vets the connections instead.
    """
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    from . import guards

    if guards.rule_active():  # a read path's rule (its database, read-only) already applies
        yield
        return

    def on_connection(dbapi_connection, connection_record, *proxy) -> None:
        if connection_record.info.get(_APP_MARK):
            return
        family = guards.driver_family(dbapi_connection)
        guards.vet(dbapi_connection, guards.Rule(family or "unknown", None, True,
                                                 AppConnectionRefused, APP_REFUSED))
        connection_record.info[_APP_MARK] = True

    for name in _POOL_EVENTS:
        event.listen(Pool, name, on_connection)
    try:
        yield
    finally:
        for name in _POOL_EVENTS:
            event.remove(Pool, name, on_connection)


def _write_refused(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) is a database refusing a write
    on a read-only connection."""
    seen = 0
    while exc is not None and seen < 10:
        if any(marker in str(exc).lower() for marker in _WRITE_REFUSALS):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def load_flask_app(spec: str, *, read_only: bool = True):
    """Import ``module:attr``; call it when it is an app factory, with the
    literal arguments of ``module:factory(...)`` when given (Flask's rule, see
    :mod:`.appspec`). The app
    context stays pushed for the life of this process (``flask db`` does the same).

    :param read_only: create it with read-only connections only
        (:func:`read_only_app_connections`); False only for the online run.
    :raises AppWroteOnRead: ``read_only`` and the factory (or the module's
        import, for ``module:app``) tried to write: the database refused it.
    """
    global _APP
    if _APP is None:
        import importlib

        from flask import Flask

        from .appspec import parse_app_spec

        # module:app, module:create_app or module:create_app(literals), as flask --app
        module_name, attr, args, kwargs = parse_app_spec(spec)
        guard = read_only_app_connections() if read_only else nullcontext()
        try:
            with guard:  # importing module:app creates the app too
                obj = getattr(importlib.import_module(module_name), attr)
                called = args or kwargs or not isinstance(obj, Flask)
                app = obj(*args, **kwargs) if called else obj
        except Exception as exc:
            if not read_only or isinstance(exc, ConnectionRefused) or not _write_refused(exc):
                raise
            first = (str(exc).strip().splitlines() or [""])[0]
            raise AppWroteOnRead(
                f"creating the app {spec} wrote to its database: its create_app() (or the "
                "module's import) changes the database when the app starts, e.g. "
                "flask_migrate.upgrade() on start. The dashboard created it only to read, "
                "with read-only connections, so the database refused and nothing was "
                f"written ({type(exc).__name__}: {first[:300]}). Give this target a "
                "url_env (the database URL without creating the app), or make the "
                "migration on start optional (e.g. an environment variable).") from None
        app.app_context().push()
        _APP = app
    return _APP



def alembic_config(request: dict, buffer: io.StringIO):
    """The Alembic Config of the target: from its alembic.ini, or — for a
    Flask-Migrate app — the one Flask-Migrate builds (like ``flask db``).
    Offline SQL goes to ``buffer``; everything else Alembic prints to stdout.
    With ``revision_environment = true`` it carries the locations env.py
    chooses at run time (:func:`.revision_environment.honour`)."""
    from alembic.config import Config

    from . import revision_environment

    if request.get("flask_app"):
        app = load_flask_app(request["flask_app"], read_only=not app_may_write(request))
        config = app.extensions["migrate"].migrate.get_config(request.get("directory"))
        config.output_buffer = buffer
        config.stdout = sys.stdout
        return revision_environment.honour(config, request)
    config = Config(request["alembic_ini"], ini_section=request.get("ini_section", "alembic"),
                    output_buffer=buffer, stdout=sys.stdout)
    if request.get("url"):
        # configparser interpolation: a literal % must be doubled
        config.set_main_option("sqlalchemy.url", request["url"].replace("%", "%%"))
    return revision_environment.honour(config, request)


def patch_configure(version_table: str | None) -> None:
    """Make an unmodified env.py use the targets file's version table,
    report each applied step to :data:`VERSION_APPLY_HOOKS` (chained with
    env.py's own ``on_version_apply``) and the configured connection to
    :data:`CONFIGURE_HOOKS`."""
    from alembic.runtime.environment import EnvironmentContext

    original = EnvironmentContext.configure

    def configure(self, *args, **kwargs):
        if version_table:
            kwargs.setdefault("version_table", version_table)
        theirs = kwargs.get("on_version_apply")

        def on_version_apply(ctx, step, heads, run_args):
            for hook in VERSION_APPLY_HOOKS:
                hook(step, heads)
            if theirs is not None:
                theirs(ctx=ctx, step=step, heads=heads, run_args=run_args)

        kwargs["on_version_apply"] = on_version_apply
        configured = original(self, *args, **kwargs)
        connection = kwargs.get("connection")
        if connection is not None:
            for hook in CONFIGURE_HOOKS:
                hook(self, connection)
        return configured

    EnvironmentContext.configure = configure


def database_url(request: dict) -> dict:
    """Op ``database_url``: the URL a Flask-Migrate app uses (its own config decides it)."""
    app = load_flask_app(request["flask_app"], read_only=True)  # status and history read it
    eng = app.extensions["migrate"].db.engine
    return {"url": eng.url.render_as_string(hide_password=False)}


def script_directory(request: dict) -> dict:
    """Op ``script_directory``: where the script directory and version
    locations are, resolved by Alembic in the target's own Python — this is
    what makes ``script_location = package:path`` (package resources) work.

    With ``revision_environment = true`` env.py is run first, the way
    ``alembic history`` runs it (:mod:`.revision_environment`), and the
    locations are those it chose.

    :return: ``{"script_location": path, "version_locations": [paths],
        "recursive": bool, "revision_environment": bool, "chosen_by":
        "script"|"config"|"ini"|None, "note": str|None}``, absolute paths;
        ``chosen_by`` says who chose (env.py altering the script directory or
        the Config, or nobody: the ini), ``note`` why env.py could not tell.
    """
    from alembic.script import ScriptDirectory

    from . import revision_environment

    script = ScriptDirectory.from_config(alembic_config(request, io.StringIO()))
    chosen = revision_environment.chosen_for(request) or {}
    locations = alembic_private.version_locations(script)
    return {"script_location": os.path.abspath(script.dir),
            "version_locations": [os.path.abspath(p) for p in locations],
            "recursive": bool(script.recursive_version_locations),
            "revision_environment": bool(chosen), "chosen_by": chosen.get("chosen_by"),
            "note": chosen.get("note")}


def identifiers(request: dict) -> dict:
    """Op ``identifiers`` (``paths``): run revision files whose identifiers are
    not literals; return ``{path: {"revision", "down_revision", "branch_labels",
    "depends_on", "doc"}}``."""
    from alembic.script import ScriptDirectory
    from alembic.util import load_python_file

    ScriptDirectory.from_config(alembic_config(request, io.StringIO()))  # prepend_sys_path
    found = {}
    for path in request["paths"]:
        module = load_python_file(os.path.dirname(path), os.path.basename(path))
        found[path] = {name: getattr(module, name, None) for name in
                       ("revision", "down_revision", "branch_labels", "depends_on")}
        found[path]["doc"] = module.__doc__ or ""
    return {"identifiers": found}
