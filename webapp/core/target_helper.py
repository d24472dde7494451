"""Runs Alembic for one target inside the target's own process.

This file is executed as a script by the target's interpreter
(``python target_helper.py REQUEST.json RESULT.json``), in the target's
working directory and environment. It may import only what a project that
uses Alembic already has: the standard library, ``alembic`` and
``sqlalchemy`` (plus Flask and Flask-Migrate for ``flask_app`` targets). It
never imports the dashboard.

Request (JSON object):
  ``op``            "offline_sql" | "command" | "plan" | "run" |
                    "database_url" | "identifiers"
  ``flask_app``     for Flask-Migrate targets: ``module:app`` or
                    ``module:create_app``; with ``directory`` (migrations)
  ``alembic_ini``   path of the ini; ``ini_section`` (default "alembic")
  ``url``           database URL, set as ``sqlalchemy.url`` like Alembic's
                    templates expect (not logged, not echoed back)
  ``version_table`` applied as default to ``context.configure``
  offline_sql: ``revision``, ``direction`` ("upgrade" | "downgrade")
  command:     ``command`` ("upgrade" | "downgrade" | "stamp"),
               ``revision``, ``sql`` (bool)
  plan:        ``command``, ``revision`` → current heads, steps, heads
               after, offline SQL from the *current* state, file checksums
  run:         ``command``, ``revision``, ``lock_name``, ``expect_current``
               → runs online while holding the target lock; reports
               before/after heads, applied and failed revisions

Result (JSON object written to RESULT.json):
  ``{"ok": true, "sql": "...", "current": [...]}`` or
  ``{"ok": false, "error": {"type", "message", "traceback": [lines]}}``.
Everything Alembic prints and everything ``env.py`` logs goes to this
process's stdout/stderr, which the caller captures as the log.
"""

from __future__ import annotations

import io
import json
import sys
import traceback

_APP = None


def _load_flask_app(spec: str):
    """Import ``module:attr``; call it when it is an app factory. The app
    context stays pushed for the life of this process (``flask db`` does the same)."""
    global _APP
    if _APP is None:
        import importlib

        module_name, _, attr = spec.partition(":")
        obj = getattr(importlib.import_module(module_name), attr or "app")
        from flask import Flask

        app = obj if isinstance(obj, Flask) else obj()
        app.app_context().push()
        _APP = app
    return _APP


def _config(request: dict, buffer: io.StringIO):
    """The Alembic Config of the target: from its alembic.ini, or — for a
    Flask-Migrate app — the one Flask-Migrate builds (like ``flask db``)."""
    from alembic.config import Config

    if request.get("flask_app"):
        app = _load_flask_app(request["flask_app"])
        config = app.extensions["migrate"].migrate.get_config(request.get("directory"))
        config.output_buffer = buffer
        config.stdout = sys.stdout
        return config
    config = Config(request["alembic_ini"], ini_section=request.get("ini_section", "alembic"),
                    output_buffer=buffer, stdout=sys.stdout)
    if request.get("url"):
        # configparser interpolation: a literal % must be doubled
        config.set_main_option("sqlalchemy.url", request["url"].replace("%", "%%"))
    return config


def database_url(request: dict) -> dict:
    """The database URL a Flask-Migrate app uses (its own config decides it)."""
    app = _load_flask_app(request["flask_app"])
    engine = app.extensions["migrate"].db.engine
    return {"url": engine.url.render_as_string(hide_password=False)}


def identifiers(request: dict) -> dict:
    """Run revision files whose identifiers are not literals; return them."""
    import os

    from alembic.script import ScriptDirectory
    from alembic.util import load_python_file

    ScriptDirectory.from_config(_config(request, io.StringIO()))  # applies prepend_sys_path
    found = {}
    for path in request["paths"]:
        module = load_python_file(os.path.dirname(path), os.path.basename(path))
        found[path] = {name: getattr(module, name, None) for name in
                       ("revision", "down_revision", "branch_labels", "depends_on")}
        found[path]["doc"] = module.__doc__ or ""
    return {"identifiers": found}


_VERSION_APPLY_HOOKS: list = []


def _patch_configure(version_table: str | None) -> None:
    """Make an unmodified env.py use the targets file's version table, and
    report each applied step to our hooks (chained with env.py's own)."""
    from alembic.runtime.environment import EnvironmentContext

    original = EnvironmentContext.configure

    def configure(self, *args, **kwargs):
        if version_table:
            kwargs.setdefault("version_table", version_table)
        theirs = kwargs.get("on_version_apply")

        def on_version_apply(ctx, step, heads, run_args):
            for hook in _VERSION_APPLY_HOOKS:
                hook(step, heads)
            if theirs is not None:
                theirs(ctx=ctx, step=step, heads=heads, run_args=run_args)

        kwargs["on_version_apply"] = on_version_apply
        return original(self, *args, **kwargs)

    EnvironmentContext.configure = configure


def _engine(url: str):
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


def _sqlite_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or ":memory:"


def _read_current(connection, version_table: str) -> list[str]:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    return list(context.get_current_heads())


def current_heads(url: str, version_table: str) -> list[str]:
    """The database's current heads; [] for a SQLite file that does not exist
    (without creating it)."""
    import os

    path = _sqlite_path(url)
    if path not in (None, ":memory:") and not os.path.exists(path):
        return []
    engine = _engine(url)
    try:
        with engine.connect() as connection:
            return _read_current(connection, version_table)
    finally:
        engine.dispose()


def _steps(script, command_name: str, revision: str, heads):
    """The migration steps Alembic's own command would run (same private
    helpers as ``alembic.command``)."""
    heads = tuple(heads)
    if command_name == "upgrade":
        return script._upgrade_revs(revision, heads)
    if command_name == "downgrade":
        return script._downgrade_revs(revision, heads)
    if command_name == "stamp":
        return script._stamp_revs(revision, heads)
    raise ValueError(f"unsupported command {command_name!r}")


def _file_sha256(path) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _step_id(step) -> str:
    """The revision a step applies or removes ("a,b" for a stamp, "base" for none)."""
    if hasattr(step, "revision") and not getattr(step, "is_stamp", False):
        return step.revision.revision
    return ",".join(getattr(step, "to_", ()) or ()) or "base"


def _describe(script, step) -> dict:
    """One step as JSON: revision, direction, down revisions, message, file."""
    if hasattr(step, "revision") and not getattr(step, "is_stamp", False):
        script_rev = step.revision
        return {"revision": script_rev.revision,
                "direction": "upgrade" if step.is_upgrade else "downgrade",
                "down_revisions": list(script_rev._versioned_down_revisions),
                "message": script_rev.doc, "path": str(script_rev.path),
                "sha256": _file_sha256(script_rev.path)}
    return {"revision": _step_id(step), "direction": "stamp",
            "down_revisions": list(getattr(step, "from_", ()) or ()),
            "message": "stamp (version table only; no migration runs)", "path": None,
            "sha256": None}


def plan(request: dict) -> dict:
    """The plan of ``command revision`` from the database's current state."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    version_table = request.get("version_table") or "alembic_version"
    current = current_heads(request["url"], version_table)
    buffer = io.StringIO()
    config = _config(request, buffer)
    script = ScriptDirectory.from_config(config)
    command_name, revision = request["command"], request["revision"]
    steps = _steps(script, command_name, revision, current)
    heads_after: list = [list(current)]
    _VERSION_APPLY_HOOKS.append(lambda step, heads: heads_after.append(sorted(heads)))

    def fn(heads, context):
        return _steps(script, command_name, revision, heads)

    rehearsal = False
    try:
        with EnvironmentContext(config, script, fn=fn, as_sql=True,
                                starting_rev=list(current) or None,
                                destination_rev=revision):
            script.run_env()
        sql = buffer.getvalue()
    except CommandError as exc:
        path = _sqlite_path(request["url"])
        if "requires a live database connection" not in str(exc) or path is None:
            raise
        if request.get("flask_app"):
            # A Flask-Migrate app's engine cannot be pointed at a scratch copy:
            # the plan is the steps alone, said plainly.
            sql = ("-- Offline SQL is not available for this plan: Alembic cannot render\n"
                   "-- SQLite batch operations offline, and a Flask-Migrate app's own\n"
                   "-- database cannot be swapped for a scratch copy to rehearse them.\n")
        else:
            del heads_after[1:]  # the failed offline pass may have reported some
            sql = _sqlite_rehearsal_copy(request, path, fn, revision)
            rehearsal = True
    return {"current": current, "steps": [_describe(script, s) for s in steps],
            "heads_after": heads_after[-1], "sql": sql, "rehearsal": rehearsal}


class RehearsalRefused(Exception):
    """A rehearsal would have touched a database other than its scratch copy."""


def _capture_statements(config, fn, destination: str, scratch_path: str) -> str:
    """Run ``fn``'s steps online against the scratch SQLite file
    ``scratch_path``, recording every statement except reads; returns them
    as an SQL script. Any statement sent to another database is stopped
    before it runs (:class:`RehearsalRefused`)."""
    import os

    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    captured: list[str] = []
    recording = False

    def record(conn, cursor, statement, parameters, context, executemany):
        database = conn.engine.url.database or ""
        if conn.engine.dialect.name != "sqlite" or \
                os.path.realpath(database) != os.path.realpath(scratch_path):
            raise RehearsalRefused("the rehearsal tried to reach a database other than its "
                                   "scratch copy; nothing was run there")
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if recording and head not in ("SELECT", "PRAGMA"):
            text = statement.strip()
            if parameters:
                text += f"\n-- parameters: {parameters!r}"
            captured.append(text + ";")

    script = ScriptDirectory.from_config(config)

    def steps(heads, context):
        nonlocal recording
        recording = True
        return fn(heads, context)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with EnvironmentContext(config, script, fn=steps, destination_rev=destination):
            script.run_env()
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    header = ("-- Alembic cannot render batch operations as offline SQL on SQLite;\n"
              "-- these statements were captured from a rehearsal on a scratch copy.\n")
    return header + "\n\n".join(captured) + "\n"


def _sqlite_rehearsal_copy(request: dict, path: str, fn, destination: str) -> str:
    """Rehearse on a copy of the target's SQLite file (sqlite3 backup API)."""
    import os
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        copy = os.path.join(tmp, "rehearsal.db")
        if os.path.exists(path):
            source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            target = sqlite3.connect(copy)
            with target:
                source.backup(target)
            source.close()
            target.close()
        config = _config(dict(request, url="sqlite:///" + copy), io.StringIO())
        return _capture_statements(config, fn, destination, copy)


class PlanChanged(Exception):
    """The database is no longer where the job's plan started."""


class TargetBusy(Exception):
    """Another process holds this target's migration lock."""


class _TargetLock:
    """The lock held on the target database itself for a whole job.

    MySQL/MariaDB: ``GET_LOCK`` on a dedicated connection; PostgreSQL:
    session-level ``pg_try_advisory_lock``; SQLite: ``flock`` on a file
    beside the database. All are released by the server/OS when this
    process dies, however it dies.
    """

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.engine = None
        self.connection = None
        self.file = None

    def acquire(self) -> None:
        import hashlib

        from sqlalchemy import text

        path = _sqlite_path(self.url)
        if path is not None:
            import fcntl

            lock_path = (path if path != ":memory:" else "memory") + ".dashboard-lock"
            self.file = open(lock_path, "a+")  # noqa: SIM115 (held for the run)
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.close()
                raise TargetBusy(f"lock file {lock_path} is held by another process") from None
            return
        self.engine = _engine(self.url)
        self.connection = self.engine.connect()
        dialect = self.engine.dialect.name
        if dialect in ("mysql", "mariadb"):
            key = "alembic-dashboard:" + hashlib.sha256(self.name.encode()).hexdigest()[:40]
            got = self.connection.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": key}).scalar()
        elif dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(
                ("alembic-dashboard:" + self.name).encode()).digest()[:8], "big", signed=True)
            got = self.connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                          {"k": key}).scalar()
        else:
            raise ValueError(f"no migration lock for dialect {dialect}")
        self.connection.commit()
        if not got:
            self.release()
            raise TargetBusy(f"the {dialect} lock for this target is held by another session")

    def release(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.connection is not None:
            self.connection.close()  # ends the session: the server drops its locks
            self.connection = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def run(request: dict) -> dict:
    """Run ``command revision`` online while holding the target lock.

    Always returns a result (``ok`` False on failure) carrying what is known:
    heads before/after, the planned steps, those applied, the failing one.
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    version_table = request.get("version_table") or "alembic_version"
    url = request["url"]
    lock = _TargetLock(url, request["lock_name"])
    try:
        lock.acquire()
    except TargetBusy as exc:
        return {"ok": False, "busy": True, "error": {"type": "TargetBusy", "message": str(exc),
                                                     "traceback": []}}
    applied: list[str] = []
    applied_steps: list[dict] = []

    def on_apply(info, heads):
        # ``info`` is Alembic's MigrationInfo for the step just applied
        if info.is_stamp:
            direction, revision = "stamp", ",".join(info.up_revision_ids) or "base"
        else:
            direction = "upgrade" if info.is_upgrade else "downgrade"
            revision = info.up_revision_id
        applied.append(revision)
        step_info = {"revision": revision, "direction": direction, "path": None,
                     "sha256": None}
        if direction == "upgrade" and info.up_revision is not None:
            step_info.update(path=str(info.up_revision.path),
                             sha256=_file_sha256(info.up_revision.path))
        applied_steps.append(step_info)
        print(f"[dashboard] {direction} {revision} done; "
              f"heads now: {', '.join(sorted(heads)) or 'base'}", flush=True)

    result: dict = {"applied": applied, "applied_steps": applied_steps}
    try:
        before = current_heads(url, version_table)
        result["before"] = before
        expected = request.get("expect_current")
        if expected is not None and sorted(expected) != sorted(before):
            raise PlanChanged(f"the database is at {', '.join(before) or 'base'}, but the "
                              f"plan was made at {', '.join(expected) or 'base'}")
        config = _config(request, io.StringIO())
        script = ScriptDirectory.from_config(config)
        command_name, revision = request["command"], request["revision"]
        # ids only: reading and hashing every file again here costs time the CLI does not spend
        planned = [_step_id(s) for s in _steps(script, command_name, revision, before)]
        result["planned"] = planned
        print(f"[dashboard] alembic {command_name} {revision}: "
              f"{len(planned)} step(s) from {', '.join(before) or 'base'}", flush=True)
        _VERSION_APPLY_HOOKS.append(on_apply)
        # What alembic.command.upgrade/downgrade/stamp do, with the script
        # directory already loaded above (loading 300 files twice costs ~0.1 s).
        destination = tuple(revision.split(",")) if command_name == "stamp" else revision
        with EnvironmentContext(config, script, destination_rev=destination,
                                fn=lambda heads, context: _steps(script, command_name,
                                                                 revision, heads)):
            script.run_env()
        result["ok"] = True
    except BaseException as exc:
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
        traceback.print_exc()
        result["ok"] = False
        result["error"] = {"type": type(exc).__name__, "message": str(exc),
                           "traceback": "".join(frames).splitlines()[-12:]}
        planned_ids = result.get("planned", [])
        if len(applied) < len(planned_ids):
            result["failed_revision"] = planned_ids[len(applied)]
    finally:
        try:
            result["after"] = current_heads(url, version_table)
        except Exception as exc:  # database gone: say so, keep the rest
            result["after_error"] = str(exc)
        lock.release()
    print(f"[dashboard] database now at: {', '.join(result.get('after') or []) or 'base'}",
          flush=True)
    return result


def offline_sql(request: dict) -> dict:
    """Offline SQL of one revision's upgrade (from its down revisions) or downgrade."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = _config(request, buffer)
    script = ScriptDirectory.from_config(config)
    revision = script.get_revision(request["revision"])
    if revision is None:
        raise LookupError(f"no such revision: {request['revision']}")
    if request["direction"] == "upgrade":
        step = MigrationStep.upgrade_from_script(script.revision_map, revision)
        starting = list(revision._versioned_down_revisions) or None
        destination = revision.revision
    else:
        step = MigrationStep.downgrade_from_script(script.revision_map, revision)
        starting = [revision.revision]
        destination = ",".join(revision._versioned_down_revisions) or "base"

    def steps(heads, context):
        return [step]

    from alembic.util import CommandError

    try:
        with EnvironmentContext(config, script, fn=steps, as_sql=True, starting_rev=starting,
                                destination_rev=destination):
            script.run_env()
    except CommandError as exc:
        if "requires a live database connection" not in str(exc) \
                or not str(request.get("url", "")).startswith("sqlite") \
                or request.get("flask_app"):
            raise
        prepare = [revision.revision]
        if request["direction"] == "upgrade":
            prepare = list(revision._versioned_down_revisions) + list(
                revision._resolved_dependencies)
        return {"sql": _sqlite_rehearsal(request, prepare, step, destination),
                "rehearsal": True}
    return {"sql": buffer.getvalue(), "rehearsal": False}


def _sqlite_rehearsal(request: dict, prepare: list, step, destination) -> str:
    """SQL of one step captured from running it on a scratch SQLite database.

    Alembic cannot render batch operations offline on SQLite (they reflect the
    table), so the step is run for real on an empty temporary database
    brought to ``prepare`` revisions, and the statements are recorded. The
    target's own database is not touched.
    """
    import os
    import tempfile

    from alembic import command as alembic_command

    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        path = os.path.join(tmp, "scratch.db")
        config = _config(dict(request, url="sqlite:///" + path), io.StringIO())
        for rev in prepare:
            alembic_command.upgrade(config, rev)
        return _capture_statements(config, lambda heads, context: [step], destination, path)


def command(request: dict) -> dict:
    """Run ``alembic upgrade|downgrade|stamp REVISION [--sql]``."""
    from alembic import command as alembic_command

    buffer = io.StringIO()
    config = _config(request, buffer)
    name = request["command"]
    if name not in ("upgrade", "downgrade", "stamp"):
        raise ValueError(f"unsupported command {name!r}")
    getattr(alembic_command, name)(config, request["revision"], sql=bool(request.get("sql")))
    return {"sql": buffer.getvalue() if request.get("sql") else None}


def _describe_diff(diff) -> dict:
    """One autogenerate difference as ``{"kind", "text", "destructive", "why"}``."""
    kind = diff[0] if isinstance(diff, tuple) else "modify"
    if isinstance(diff, list):  # modify_* entries come grouped per column
        return [_describe_diff(d) for d in diff]
    destructive, why = False, ""
    if kind == "add_table":
        text = f"add table {diff[1].name}"
    elif kind == "remove_table":
        text, destructive, why = f"drop table {diff[1].name}", True, "its rows are lost"
    elif kind == "add_column":
        col = diff[3]
        text = (f"add column {diff[2]}.{col.name} {col.type} "
                f"{'NULL' if col.nullable else 'NOT NULL'}")
        if not col.nullable and col.server_default is None:
            destructive, why = True, "NOT NULL without a server default fails on a table with rows"
    elif kind == "remove_column":
        text, destructive, why = (f"drop column {diff[2]}.{diff[3].name}", True,
                                  "its values are lost")
    elif kind == "add_index":
        text = f"add index {diff[1].name} on {diff[1].table.name}"
    elif kind == "remove_index":
        text, destructive, why = (f"drop index {diff[1].name}", True,
                                  "queries relying on it slow down")
    elif kind in ("add_constraint", "add_fk"):
        text = f"add constraint {diff[1].name} on {diff[1].table.name}"
    elif kind in ("remove_constraint", "remove_fk"):
        text, destructive, why = (f"drop constraint {diff[1].name}", True,
                                  "the rule it enforced is gone")
    elif kind == "modify_type":
        old, new = diff[5], diff[6]
        text = f"alter {diff[2]}.{diff[3]} type {old} → {new}"
        old_len, new_len = getattr(old, "length", None), getattr(new, "length", None)
        if old_len and new_len and new_len < old_len:
            destructive, why = True, "narrowing can truncate or reject existing values"
        elif type(old).__name__ != type(new).__name__:
            destructive, why = True, "a type change may fail on or alter existing values"
    elif kind == "modify_nullable":
        nullable = diff[6]
        text = f"alter {diff[2]}.{diff[3]} {'NULL' if nullable else 'NOT NULL'}"
        if not nullable and diff[4].get("existing_server_default") in (None, False):
            destructive, why = True, "NOT NULL added without a server default fails on NULLs"
    elif kind == "modify_default":
        text = f"alter {diff[2]}.{diff[3]} server default {diff[5]!s} → {diff[6]!s}"
    elif kind == "modify_comment":
        text = f"alter {diff[2]}.{diff[3]} comment"
    else:
        text = str(diff)
    return {"kind": kind, "text": text, "destructive": destructive, "why": why}


def _ops_sql(ops_container, dialect_name: str) -> str:
    """Offline SQL of autogenerated operations in ``dialect_name`` (no batch mode)."""
    from alembic.operations import Operations
    from alembic.operations import ops as alembic_ops
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name=dialect_name, opts={
        "as_sql": True, "output_buffer": buffer, "literal_binds": True})
    operations = Operations(context)

    def invoke(op):
        if isinstance(op, alembic_ops.OpContainer):
            for sub in op.ops:
                invoke(sub)
        else:
            operations.invoke(op)

    invoke(ops_container)
    return buffer.getvalue()


def autogenerate(request: dict) -> dict:
    """Compare target_metadata with the database like ``alembic revision
    --autogenerate``, without writing a file: the changes, the rendered
    upgrade()/downgrade() bodies, and the SQL of the upgrade."""
    from alembic.autogenerate import RevisionContext
    from alembic.autogenerate import render as alembic_render
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    config = _config(request, io.StringIO())
    script = ScriptDirectory.from_config(config)
    revision_context = RevisionContext(config, script, {
        "message": request.get("message") or "preview", "autogenerate": True, "sql": False,
        "head": request.get("head") or "head", "splice": False, "branch_label": None,
        "version_path": None, "rev_id": None, "depends_on": None})

    def retrieve_migrations(rev, context):
        revision_context.run_autogenerate(rev, context)
        return []

    with EnvironmentContext(config, script, fn=retrieve_migrations, as_sql=False,
                            template_args=revision_context.template_args,
                            revision_context=revision_context):
        script.run_env()
    # (alembic.command.revision would now write the file: we do not.)
    scripts = revision_context.generated_revisions
    if not scripts or all(s.upgrade_ops.is_empty() for s in scripts):
        return {"changes": [], "upgrade": "", "downgrade": "", "sql": "", "imports": ""}
    migration_script = scripts[-1]
    template_args: dict = {}
    alembic_render._render_python_into_templatevars(
        revision_context._last_autogen_context, migration_script, template_args)
    changes = []
    for diff in migration_script.upgrade_ops.as_diffs():
        described = _describe_diff(diff)
        changes.extend(described if isinstance(described, list) else [described])
    dialect = make_url(request["url"]).get_backend_name() if request.get("url") else \
        revision_context._last_autogen_context.dialect.name
    return {"changes": changes, "upgrade": template_args["upgrades"],
            "downgrade": template_args["downgrades"],
            "imports": template_args.get("imports", ""),
            "sql": _ops_sql(migration_script.upgrade_ops, dialect)}


def revision(request: dict) -> dict:
    """``alembic revision [--autogenerate] -m MESSAGE`` or ``alembic merge``:
    write the file exactly as Alembic does; return the new revision."""
    from alembic import command as alembic_command

    config = _config(request, io.StringIO())
    kind = request["kind"]
    if kind == "merge":
        result = alembic_command.merge(config, "heads", message=request["message"])
    else:
        result = alembic_command.revision(
            config, message=request["message"], autogenerate=kind == "autogenerate",
            head=request.get("head") or "head", branch_label=request.get("branch_label"))
    scripts = result if isinstance(result, list) else [result]
    scripts = [s for s in scripts if s is not None]
    if not scripts:
        return {"ok": False, "error": {"type": "NoChanges", "message":
                "Alembic produced no revision (no changes detected?)", "traceback": []}}
    return {"revision": scripts[0].revision, "path": str(scripts[0].path)}


def range_sql(request: dict) -> dict:
    """Offline SQL of ``upgrade START:END`` (or downgrade), like ``--sql``."""
    from alembic import command as alembic_command

    buffer = io.StringIO()
    config = _config(request, buffer)
    start, end = request["start"], request["end"]
    name = request.get("direction", "upgrade")
    getattr(alembic_command, name)(config, f"{start}:{end}" if start else end, sql=True)
    return {"sql": buffer.getvalue()}


OPERATIONS = {"offline_sql": offline_sql, "command": command, "plan": plan, "run": run,
              "database_url": database_url, "identifiers": identifiers,
              "autogenerate": autogenerate, "revision": revision, "range_sql": range_sql}


def main(argv: list[str]) -> int:
    request_path, result_path = argv[1], argv[2]
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    try:
        _patch_configure(request.get("version_table"))
        data = OPERATIONS[request["op"]](request)
        result = data if "ok" in data else {"ok": True, **data}
    except BaseException as exc:  # report everything, including SystemExit from env.py
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
        result = {"ok": False, "error": {
            "type": type(exc).__name__,
            "message": str(exc),
            "traceback": "".join(frames).splitlines()[-12:],
        }}
        traceback.print_exc()
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
