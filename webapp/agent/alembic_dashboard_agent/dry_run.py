"""Op ``dry_run``: run a job's migrations on a scratch copy of the target's schema.

The copy: SQLite, a copy of the file (sqlite3 backup API, source opened
read-only); MariaDB/MySQL, a new schema built from ``SHOW CREATE TABLE``;
PostgreSQL, a new database built from ``pg_dump --schema-only`` (``pg_dump``
and ``psql`` on this host's PATH). The version table's rows are copied, so
the run starts where the real database is. Only the schema is copied, not
the rows. The scratch copy is dropped afterwards, whatever happened. From the
first migration statement to the last, every connection must go to the copy
(:func:`rehearsal.only_database`): an env.py that picks its own URL is stopped.

On MySQL/MariaDB the migrations run as a temporary account with rights on
the scratch schema only, or on a rehearsal server (:mod:`.mysql_scratch`).
"""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import tempfile
import time

from . import alembic_private, rehearsal
from .config import VERSION_APPLY_HOOKS, alembic_config
from .database import current_heads, engine, read_current, sqlite_path
from .lock_watch import watch_for
from .mysql_scratch import mysql_build, mysql_read, mysql_scratch, scrub, scrubbed_output
from .steps import step_id, steps_for


def _scratch_name(database: str) -> str:
    """A fresh database/schema name beside ``database`` (at most 63 characters,
    only ``[A-Za-z0-9_]``: it is quoted into SQL and given to pg_dump/psql)."""
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', database[:40])}_rehearsal_{secrets.token_hex(4)}"


def _write_version_rows(scratch_url: str, version_table: str, current: list[str]) -> None:
    """Create the version table in the scratch copy and put ``current`` in it."""
    from alembic.runtime.migration import MigrationContext

    scratch = engine(scratch_url)
    try:
        with scratch.begin() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": version_table})
            alembic_private.ensure_version_table(context)
            table = alembic_private.version_table(context)
            for revision in current:
                alembic_private.impl_exec(
                    context, table.insert().values(version_num=revision))
    finally:
        scratch.dispose()


def _copy_version_rows(source_url: str, scratch_url: str, version_table: str) -> list[str]:
    """Put the real database's current revisions into the scratch copy;
    return them."""
    real = engine(source_url)
    try:
        with real.connect() as conn:
            current = read_current(conn, version_table)
    finally:
        real.dispose()
    _write_version_rows(scratch_url, version_table, current)
    return sorted(current)


def _mysql_dry_run(request: dict, backend: str, version_table: str, work=None) -> dict:
    """The MySQL/MariaDB rehearsal: the real schema read (read-only session),
    a scratch schema on the target's server or on the rehearsal server
    (``rehearsal_url``), the migrations run there as :func:`.mysql_scratch.mysql_scratch`'s
    account. Scratch schemas are named ``<database>_rehearsal_<hex>``, after
    the rehearsal URL's database (the target's when it names none).

    :raises RehearsalUnsafe: no account kept off the real schema (nothing run).
    """
    from sqlalchemy.engine import make_url

    separate = bool(request.get("rehearsal_url"))
    server_url = request.get("rehearsal_url") or request["url"]
    home = make_url(server_url).database or make_url(request["url"]).database or "db"
    scratch = _scratch_name(home)
    ddl, started_at = mysql_read(request["url"], version_table)
    with mysql_scratch(server_url, scratch, separate) as account, \
            scrubbed_output(account.password):
        mysql_build(account.url, ddl)
        _write_version_rows(account.url, version_table, started_at)
        result = (work or _run)(request, account.url, rehearsal.only_database(backend, scratch))
    where = " on the rehearsal server (rehearsal_url_env)" if separate else ""
    who = ("a temporary account with rights on it only" if account.temporary
           else "the rehearsal server's account")
    return {**scrub(result, account.password), "account": account.user,
            "copy": f"a scratch schema built from SHOW CREATE TABLE{where}, run as {who}",
            "started_at": started_at}


def _pg_env(url) -> dict[str, str]:
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env


def _pg_args(url, database: str) -> list[str]:
    args = ["-d", database]
    if url.host:
        args += ["-h", url.host]
    if url.port:
        args += ["-p", str(url.port)]
    if url.username:
        args += ["-U", url.username]
    return args


def _postgresql_copy(url, scratch: str) -> None:
    from sqlalchemy import text

    real = engine(url.render_as_string(hide_password=False)).execution_options(
        isolation_level="AUTOCOMMIT")
    try:
        with real.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{scratch}"'))
    finally:
        real.dispose()
    dump = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges",
                           *_pg_args(url, url.database)], env=_pg_env(url),
                          capture_output=True, check=True, timeout=300)
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", *_pg_args(url, scratch)],
                   input=dump.stdout, env=_pg_env(url), capture_output=True, check=True,
                   timeout=300)


def _drop(url, scratch: str) -> None:
    from sqlalchemy import text

    server = engine(url.render_as_string(hide_password=False)).execution_options(
        isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{scratch}"'))
    finally:
        server.dispose()


def _run(request: dict, scratch_url: str, check) -> dict:
    """Run the migrations on the copy; time each step; keep the failing statement.

    A revision is blamed only when its migration had started (Alembic pulls
    each step just before running it); a failure before that is env.py's.
    ``observed_locks`` per statement (:func:`.lock_watch.watch_for`).
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    config = alembic_config(dict(request, url=scratch_url), io.StringIO())
    script = ScriptDirectory.from_config(config)
    command_name, revision = request["command"], request["revision"]
    timings: list[dict] = []
    started: list[str] = []
    last = {"statement": None, "mark": time.monotonic()}

    def remember(conn, cursor, statement, parameters, context, executemany):
        last["statement"] = statement

    def on_apply(step, heads):
        now = time.monotonic()
        timings.append({"revision": started[-1] if started else "?",
                        "seconds": round(now - last["mark"], 4)})
        last["mark"] = now

    def fn(heads, context):
        for step in steps_for(script, command_name, revision, heads):
            started.append(step_id(step))
            last["mark"] = time.monotonic()
            yield step

    began = time.monotonic()
    watch = watch_for(scratch_url, started)
    VERSION_APPLY_HOOKS.append(on_apply)
    event.listen(Engine, "before_cursor_execute", remember)
    try:
        with check, watch:
            destination = tuple(revision.split(",")) if command_name == "stamp" else revision
            with EnvironmentContext(config, script, fn=fn, destination_rev=destination):
                script.run_env()
        return {"passed": True, "steps": timings, "seconds": round(time.monotonic() - began, 4),
                "observed_locks": watch.observed}
    except Exception as exc:
        failed = started[-1] if len(started) > len(timings) else None
        print(f"[dashboard] rehearsal failed: {type(exc).__name__}: {exc}", flush=True)
        return {"passed": False, "steps": timings, "failed_revision": failed,
                "failed_phase": None if failed else "env",
                "failing_statement": last["statement"] if failed else None,
                "error": f"{type(exc).__name__}: {exc}", "observed_locks": watch.observed,
                "seconds": round(time.monotonic() - began, 4)}
    finally:
        event.remove(Engine, "before_cursor_execute", remember)
        VERSION_APPLY_HOOKS.remove(on_apply)


def dry_run(request: dict, work=_run) -> dict:
    """Op ``dry_run`` (``command``, ``revision``): the job's migrations on a
    scratch copy — ``{"passed", "steps": [{"revision", "seconds"}],
    "seconds", "failed_revision", "failed_phase", "failing_statement",
    "error", "copy", "started_at", "observed_locks"}`` (``observed_locks``
    per statement: PostgreSQL its locks, MySQL/MariaDB the online-DDL clause
    it was accepted with, :func:`.lock_watch.watch_for`; [] on SQLite;
    MySQL/MariaDB: also ``"account"``, the user it ran as); ``started_at``
    lists the real database's revisions the copy started from. Optional
    request field ``rehearsal_url`` (MySQL/MariaDB): the rehearsal server to
    build the copy on. Setting up the copy may raise (e.g. no right to create
    a database); the copy is dropped in every case.

    ``work(request, scratch_url, check)`` runs on the copy inside ``check``
    (default ``_run``: the job's migrations; :mod:`.stairway` passes its own).

    :raises RehearsalUnsafe: MySQL/MariaDB with neither a temporary account
        nor a rehearsal server: nothing was run.
    """
    from sqlalchemy.engine import make_url

    url = make_url(request["url"])
    version_table = request.get("version_table") or "alembic_version"
    backend = url.get_backend_name()
    if backend == "sqlite":
        real_path = sqlite_path(request["url"])
        with tempfile.TemporaryDirectory(prefix="alembic-dry-run-") as tmp:
            copy = os.path.join(tmp, "rehearsal.db")
            rehearsal.copy_sqlite(real_path, copy)
            started_at = current_heads("sqlite:///" + copy, version_table)
            result = work(request, "sqlite:///" + copy, rehearsal.scratch_only(copy))
            return {**result, "copy": "a copy of the SQLite file", "started_at": started_at}
    if backend in ("mysql", "mariadb"):
        return _mysql_dry_run(request, backend, version_table, work)
    if backend != "postgresql":
        raise ValueError(f"no rehearsal for dialect {backend}")
    scratch = _scratch_name(url.database or "db")
    scratch_url = url.set(database=scratch).render_as_string(hide_password=False)
    try:
        _postgresql_copy(url, scratch)
        started_at = _copy_version_rows(request["url"], scratch_url, version_table)
        result = work(request, scratch_url, rehearsal.only_database(backend, scratch))
        return {**result, "copy": "a new PostgreSQL database built with pg_dump --schema-only",
                "started_at": started_at}
    finally:
        _drop(url, scratch)
