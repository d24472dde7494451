"""Op ``dry_run``: run a job's migrations on a scratch copy of the target's schema.

The copy: SQLite, a copy of the file (sqlite3 backup API, source opened
read-only); MariaDB/MySQL, a new schema built from ``SHOW CREATE TABLE``;
PostgreSQL, a new database built from ``pg_dump --schema-only`` (``pg_dump``
and ``psql`` on this host's PATH). The version table's rows are copied, so
the run starts where the real database is. Only the schema is copied, not
the rows. The scratch copy is dropped afterwards, whatever happened. From the
first migration statement to the last, every connection must go to the copy
(:func:`rehearsal.only_database`): an env.py that picks its own URL is stopped.

On MySQL/MariaDB a schema is a database, so the target's own account could
reach the real schema from the copy (``schema=``, ``INSERT INTO real.t``,
``USE real``). The migrations therefore run as a temporary account created
for the rehearsal with rights on the scratch schema only (random name and
password, dropped afterwards whatever happened): the server itself refuses
every statement on the real schema. With a rehearsal server named in the
targets file (request field ``rehearsal_url``), the copy is built and run
there — as a temporary account when its account may create one, else as
that account. Neither possible: :class:`RehearsalUnsafe`, nothing run.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

from . import rehearsal
from .config import VERSION_APPLY_HOOKS, alembic_config
from .database import current_heads, engine, read_current, sqlite_path
from .steps import step_id, steps_for


def _scratch_name(database: str) -> str:
    """A fresh database/schema name beside ``database`` (at most 63 characters,
    only ``[A-Za-z0-9_]``: it is quoted into SQL and given to pg_dump/psql)."""
    return f"{re.sub(r'[^A-Za-z0-9_]', '_', database[:40])}_rehearsal_{secrets.token_hex(4)}"


class RehearsalUnsafe(Exception):
    """A MySQL/MariaDB rehearsal cannot be kept off the real schema: the
    account may not create a temporary one and no rehearsal server is named."""


UNSAFE = (
    "Not rehearsed: on MySQL/MariaDB a rehearsal runs its migrations as a temporary account "
    "with rights on the scratch schema only, so that the server refuses any statement on the "
    "real schema, and the target's account ({account}) may not create one ({why}). Nothing "
    "was run. Either name a rehearsal server in the targets file (rehearsal_url_env: the URL "
    "of an account with no rights on the real database and all rights on the schemas "
    "`<database>\\_rehearsal\\_%`, <database> being that URL's database, or {pattern} when "
    "it names none), or grant the target's account CREATE USER and ALL ON {pattern}.* WITH "
    "GRANT OPTION.")


def _write_version_rows(scratch_url: str, version_table: str, current: list[str]) -> None:
    """Create the version table in the scratch copy and put ``current`` in it."""
    from alembic.runtime.migration import MigrationContext

    scratch = engine(scratch_url)
    try:
        with scratch.begin() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": version_table})
            context._ensure_version_table()
            for revision in current:
                context.impl._exec(context._version.insert().values(version_num=revision))
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


def _mysql_read(url: str, version_table: str) -> tuple[list[str], list[str]]:
    """The real schema's ``CREATE TABLE`` statements and current revisions
    (sorted), read in a session the server keeps read-only."""
    from sqlalchemy import text

    real = engine(url)
    try:
        with real.connect() as conn:
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
            tables = [row[0] for row in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "DATABASE() AND table_type = 'BASE TABLE'"))]
            ddl = [conn.execute(text("SHOW CREATE TABLE `{}`".format(name.replace("`", "``"))))
                   .one()[1] for name in tables]
            current = read_current(conn, version_table)
    finally:
        real.dispose()
    return ddl, sorted(current)


def _mysql_build(run_url: str, ddl: list[str]) -> None:
    """Create the tables of ``ddl`` in the scratch schema as the account the
    rehearsal runs as (foreign-key checks off: the tables come in any order)."""
    from sqlalchemy import text

    copy = engine(run_url)
    try:
        with copy.begin() as conn:
            conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
            for statement in ddl:
                conn.execute(text(statement))
    finally:
        copy.dispose()


@dataclass
class _Account:
    """The account a MySQL/MariaDB rehearsal runs as.

    :ivar url: its URL to the scratch schema (holds ``password``).
    :ivar user: its user name; ``host`` the host part of the account.
    :ivar password: the temporary account's password (None: not temporary).
    :ivar temporary: created for this rehearsal, dropped after it.
    """

    url: str
    user: str
    host: str
    password: str | None
    temporary: bool


def _admin_engine(server_url: str):
    """An autocommit engine on the server whose errors never show statement
    parameters (the temporary password is one)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
                         hide_parameters=True)


def _reason(exc) -> str:
    """The server's own words for a refused statement (error code and
    message; never the statement or its parameters)."""
    args = getattr(exc.orig, "args", ())
    return " ".join(str(a) for a in args[:2]) if args else type(exc.orig).__name__


def _create_account(conn, scratch: str) -> tuple[str, str, str] | str:
    """Create a temporary account with ``ALL`` on ``scratch``.* and nothing
    else, at the host the server sees this client as (``USER()``: the most
    specific match, ahead of any anonymous account).

    :return: (user, host, password), or the server's reason it could not
        be made (no password in it).
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    host = str(conn.execute(text("SELECT USER()")).scalar_one()).rsplit("@", 1)[-1]
    user, password = f"rehearsal_{secrets.token_hex(5)}", secrets.token_hex(16)
    account = {"u": user, "h": host}
    try:
        conn.execute(text("CREATE USER :u@:h IDENTIFIED BY :p"), dict(account, p=password))
    except DBAPIError as exc:
        return _reason(exc)
    try:
        conn.execute(text(f"GRANT ALL ON `{scratch}`.* TO :u@:h"), account)
    except DBAPIError as exc:
        conn.execute(text("DROP USER IF EXISTS :u@:h"), account)
        return _reason(exc)
    return user, host, password


def _drop_account(conn, account: _Account) -> None:
    """End the temporary account's sessions (a connection env.py left open
    would keep its locks) and drop the account."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    names = {"u": account.user, "h": account.host}
    try:
        threads = conn.execute(text(
            "SELECT id FROM information_schema.processlist WHERE user = :u"), names).scalars()
        for thread in list(threads):
            conn.execute(text(f"KILL CONNECTION {int(thread)}"))
    except DBAPIError:  # no right to: its sessions end with this process
        pass
    conn.execute(text("DROP USER IF EXISTS :u@:h"), names)


def _run_as(server_url: str, scratch: str, made: tuple[str, str, str] | str,
            separate: bool) -> _Account:
    """The :class:`_Account` for what :func:`_create_account` returned.

    :raises RehearsalUnsafe: no temporary account on the target's own server.
    """
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    if isinstance(made, tuple):
        user, host, password = made
        url = server.set(username=user, password=password, database=scratch)
        return _Account(url.render_as_string(hide_password=False), user, host, password, True)
    if not separate:
        pattern = "`" + scratch.rsplit("_rehearsal_", 1)[0] + "\\_rehearsal\\_%`"
        raise RehearsalUnsafe(UNSAFE.format(account=server.username or "?", why=made,
                                            pattern=pattern))
    # the rehearsal server's own account: the targets file says it is meant for this
    url = server.set(database=scratch)
    return _Account(url.render_as_string(hide_password=False), server.username or "", "",
                    None, False)


@contextmanager
def _mysql_scratch(server_url: str, scratch: str, separate: bool):
    """Create the account the rehearsal runs as and the scratch schema
    ``scratch`` on ``server_url``'s server; yield the :class:`_Account`;
    drop both afterwards, whatever happened.

    :param separate: ``server_url`` is the rehearsal server's; its account
        runs the rehearsal itself when it may not create a temporary one.
    :raises RehearsalUnsafe: on the target's own server, no temporary
        account could be made (raised before anything is created).
    """
    from sqlalchemy import text

    admin = _admin_engine(server_url)
    try:
        with admin.connect() as conn:
            account = _run_as(server_url, scratch, _create_account(conn, scratch), separate)
            try:
                conn.execute(text(f"CREATE DATABASE `{scratch}`"))
                try:
                    yield account
                finally:
                    conn.execute(text(f"DROP DATABASE IF EXISTS `{scratch}`"))
            finally:
                if account.temporary:
                    _drop_account(conn, account)
    finally:
        admin.dispose()


class _Scrubbing:
    """A text stream writing through to ``stream`` with ``secret`` replaced
    by ``***`` (env.py or a revision printing the URL it was given)."""

    def __init__(self, stream, secret: str) -> None:
        self._stream, self._secret = stream, secret

    def write(self, text: str) -> int:
        return self._stream.write(text.replace(self._secret, "***"))

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def _scrubbed_output(secret: str | None):
    """Within this block ``secret`` never reaches sys.stdout/sys.stderr."""
    if not secret:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Scrubbing(sys.stdout, secret), _Scrubbing(sys.stderr, secret)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def _scrub(result: dict, secret: str | None) -> dict:
    """``result`` with ``secret`` replaced by ``***`` in its text fields."""
    if not secret:
        return result
    return {key: value.replace(secret, "***") if isinstance(value, str) else value
            for key, value in result.items()}


def _mysql_dry_run(request: dict, backend: str, version_table: str) -> dict:
    """The MySQL/MariaDB rehearsal: the real schema read (read-only session),
    a scratch schema on the target's server or on the rehearsal server
    (``rehearsal_url``), the migrations run there as :func:`_mysql_scratch`'s
    account. Scratch schemas are named ``<database>_rehearsal_<hex>``, after
    the rehearsal URL's database (the target's when it names none).

    :raises RehearsalUnsafe: no account kept off the real schema (nothing run).
    """
    from sqlalchemy.engine import make_url

    separate = bool(request.get("rehearsal_url"))
    server_url = request.get("rehearsal_url") or request["url"]
    home = make_url(server_url).database or make_url(request["url"]).database or "db"
    scratch = _scratch_name(home)
    ddl, started_at = _mysql_read(request["url"], version_table)
    with _mysql_scratch(server_url, scratch, separate) as account, \
            _scrubbed_output(account.password):
        _mysql_build(account.url, ddl)
        _write_version_rows(account.url, version_table, started_at)
        result = _run(request, account.url, rehearsal.only_database(backend, scratch))
    where = " on the rehearsal server (rehearsal_url_env)" if separate else ""
    who = ("a temporary account with rights on it only" if account.temporary
           else "the rehearsal server's account")
    return {**_scrub(result, account.password), "account": account.user,
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
    VERSION_APPLY_HOOKS.append(on_apply)
    event.listen(Engine, "before_cursor_execute", remember)
    try:
        with check:
            destination = tuple(revision.split(",")) if command_name == "stamp" else revision
            with EnvironmentContext(config, script, fn=fn, destination_rev=destination):
                script.run_env()
        return {"passed": True, "steps": timings, "seconds": round(time.monotonic() - began, 4)}
    except Exception as exc:
        failed = started[-1] if len(started) > len(timings) else None
        print(f"[dashboard] rehearsal failed: {type(exc).__name__}: {exc}", flush=True)
        return {"passed": False, "steps": timings, "failed_revision": failed,
                "failed_phase": None if failed else "env",
                "failing_statement": last["statement"] if failed else None,
                "error": f"{type(exc).__name__}: {exc}",
                "seconds": round(time.monotonic() - began, 4)}
    finally:
        event.remove(Engine, "before_cursor_execute", remember)
        VERSION_APPLY_HOOKS.remove(on_apply)


def dry_run(request: dict) -> dict:
    """Op ``dry_run`` (``command``, ``revision``): the job's migrations on a
    scratch copy — ``{"passed", "steps": [{"revision", "seconds"}],
    "seconds", "failed_revision", "failed_phase", "failing_statement",
    "error", "copy", "started_at"}`` (MySQL/MariaDB: also ``"account"``, the
    user it ran as); ``started_at`` lists the real database's revisions the
    copy started from. Optional request field ``rehearsal_url``
    (MySQL/MariaDB): the rehearsal server to build the copy on. Setting up
    the copy may raise (e.g. no right to create a database); the copy is
    dropped in every case.

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
            result = _run(request, "sqlite:///" + copy, rehearsal.scratch_only(copy))
            return {**result, "copy": "a copy of the SQLite file", "started_at": started_at}
    if backend in ("mysql", "mariadb"):
        return _mysql_dry_run(request, backend, version_table)
    if backend != "postgresql":
        raise ValueError(f"no rehearsal for dialect {backend}")
    scratch = _scratch_name(url.database or "db")
    scratch_url = url.set(database=scratch).render_as_string(hide_password=False)
    try:
        _postgresql_copy(url, scratch)
        started_at = _copy_version_rows(request["url"], scratch_url, version_table)
        result = _run(request, scratch_url, rehearsal.only_database(backend, scratch))
        return {**result, "copy": "a new PostgreSQL database built with pg_dump --schema-only",
                "started_at": started_at}
    finally:
        _drop(url, scratch)
