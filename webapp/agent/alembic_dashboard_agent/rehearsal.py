"""Rehearsals: run migrations on a scratch SQLite copy to capture their SQL.

Alembic cannot render batch operations as offline SQL on SQLite (they reflect
the table), so the statements are captured from a run on a scratch file.
The real database must never be touched: :func:`scratch_only` refuses, before
the driver connects, any connection that is not to the scratch file — also
those that an ``env.py`` makes with a URL of its own choosing — and it is in
force from the first statement of a rehearsal to its last.
"""

from __future__ import annotations

import io
import os
import re
import sqlite3
import tempfile
from contextlib import contextmanager

from .config import VERSION_APPLY_HOOKS, alembic_config
from .protocol import mark_phase


class RehearsalRefused(Exception):
    """A rehearsal would have touched a database other than its scratch copy."""


REFUSED = ("env.py connected to a database other than the rehearsal's scratch copy (it "
           "chooses its own URL instead of reading sqlalchemy.url), so the rehearsal was "
           "stopped before connecting; nothing was run on {where}. Rehearsals (and the SQL "
           "of SQLite batch operations) are not available for this target.")


def _sqlite_file(dialect, cargs, cparams) -> str | None:
    """The file a SQLite connect() is about to open, or None (another dialect)."""
    if dialect.name != "sqlite":
        return None
    database = cargs[0] if cargs else cparams.get("database", "")
    if database.startswith("file:"):  # URI form
        database = database[5:].split("?", 1)[0]
    return database


@contextmanager
def scratch_only(scratch_path: str):
    """Within this block every SQLAlchemy connection must go to ``scratch_path``.

    Checked twice: when a driver connection is about to be opened
    (``do_connect``, before a file is created or a server contacted), and
    before every statement (for a connection opened earlier).

    :raises RehearsalRefused: from the connect or execute that would escape.
    """

    allowed = os.path.realpath(scratch_path)

    def check_connect(dialect, conn_rec, cargs, cparams):
        database = _sqlite_file(dialect, cargs, cparams)
        if database is None or os.path.realpath(database) != allowed:
            where = "it" if database is None else database
            raise RehearsalRefused(REFUSED.format(where=where))

    def check_execute(conn, cursor, statement, parameters, context, executemany):
        url = conn.engine.url
        if url.get_backend_name() != "sqlite" or \
                os.path.realpath(url.database or "") != allowed:
            raise RehearsalRefused(REFUSED.format(where=url.database or "it"))

    with _guarded(check_connect, check_execute):
        yield


def _marker(step) -> str:
    """Alembic's offline marker for one applied step (``-- Running upgrade A -> B``)."""
    downs = ", ".join(step.down_revision_ids)
    ups = ", ".join(step.up_revision_ids)
    if step.is_upgrade:
        return f"-- Running upgrade {downs} -> {ups}"
    return f"-- Running downgrade {ups} -> {downs}"


_DROP_TABLE = re.compile(r'^DROP TABLE\s+"?([^\s";]+)"?\s*$', re.I)


def _columns_before_copy(cursor, statement: str, captured: list[str]) -> str | None:
    """Before a batch copy drops the old table, a comment naming its columns
    (so the lint can tell which columns the copy leaves out)."""
    match = _DROP_TABLE.match(statement.strip())
    if not match or not any(c.startswith(f"CREATE TABLE {rehearsal_tmp(match.group(1))}")
                            or c.startswith(f'CREATE TABLE "{rehearsal_tmp(match.group(1))}"')
                            for c in captured[-4:]):
        return None
    table = match.group(1)
    rows = cursor.connection.execute(f'PRAGMA table_info("{table}")').fetchall()
    return f"-- columns of {table} before the copy: " + ", ".join(row[1] for row in rows)


def rehearsal_tmp(table: str) -> str:
    """The name Alembic's batch mode gives the new copy of ``table``."""
    return f"_alembic_tmp_{table}"


def _capture(config, fn, destination) -> str:
    """Run ``fn``'s steps online (through env.py) and return every statement
    they sent, except reads, as an SQL script with Alembic's ``-- Running
    upgrade A -> B`` marker before each step's statements (as offline SQL has).
    Call inside :func:`scratch_only`."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    captured: list[str] = []
    markers: list[tuple[int, str]] = []  # (index in captured, marker) per applied step
    step_start = 0
    recording = False

    def record(conn, cursor, statement, parameters, context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if recording and head not in ("SELECT", "PRAGMA"):
            text = statement.strip()
            columns = _columns_before_copy(cursor, text, captured) if head == "DROP" else None
            if columns:
                captured.append(columns)
            if parameters:
                text += f"\n-- parameters: {parameters!r}"
            captured.append(text + ";")

    def on_apply(step, heads):
        nonlocal step_start
        markers.append((step_start, _marker(step)))
        step_start = len(captured)

    script = ScriptDirectory.from_config(config)

    def steps(heads, context):
        nonlocal recording
        recording = True
        return fn(heads, context)

    event.listen(Engine, "before_cursor_execute", record)
    VERSION_APPLY_HOOKS.append(on_apply)
    try:
        with EnvironmentContext(config, script, fn=steps, destination_rev=destination):
            script.run_env()
    finally:
        VERSION_APPLY_HOOKS.remove(on_apply)
        event.remove(Engine, "before_cursor_execute", record)
    for index, marker in reversed(markers):
        captured.insert(index, marker)
    header = ("-- Alembic cannot render batch operations as offline SQL on SQLite;\n"
              "-- these statements were captured from a rehearsal on a scratch copy.\n")
    return header + "\n\n".join(captured) + "\n"


def copy_sqlite(real_path: str, copy: str) -> None:
    """Copy the SQLite database ``real_path`` (opened read-only) to ``copy``
    with the sqlite3 backup API (consistent even while others write)."""
    source = sqlite3.connect(f"file:{real_path}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        with target:
            source.backup(target)
    finally:
        source.close()
        target.close()


@contextmanager
def _guarded(check_connect, check_execute):
    """Listen with both checks on every SQLAlchemy Engine for the block."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "do_connect", check_connect)
    event.listen(Engine, "before_cursor_execute", check_execute)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", check_execute)
        event.remove(Engine, "do_connect", check_connect)


def on_copy(request: dict, real_path: str, fn, destination) -> str:
    """Rehearse ``fn``'s steps on a copy of the target's SQLite file
    (``real_path``, opened read-only; sqlite3 backup API).

    :raises RehearsalRefused: env.py reached for another database.
    """
    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        copy = os.path.join(tmp, "rehearsal.db")
        if os.path.exists(real_path):
            copy_sqlite(real_path, copy)
        config = alembic_config(dict(request, url="sqlite:///" + copy), io.StringIO())
        try:
            with scratch_only(copy):
                return _capture(config, fn, destination)
        except BaseException as exc:
            raise mark_phase(exc, "rehearsal")


def from_empty(request: dict, prepare: list[str], fn, destination) -> str:
    """Rehearse ``fn``'s steps on an empty scratch SQLite file first upgraded
    to the ``prepare`` revisions (the target's own database is not read).

    :raises RehearsalRefused: env.py reached for another database — checked
        before the preparing upgrades as well.
    """
    from alembic import command as alembic_command

    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        path = os.path.join(tmp, "scratch.db")
        config = alembic_config(dict(request, url="sqlite:///" + path), io.StringIO())
        try:
            with scratch_only(path):
                for rev in prepare:
                    alembic_command.upgrade(config, rev)
                return _capture(config, fn, destination)
        except BaseException as exc:
            raise mark_phase(exc, "rehearsal")


def needs_rehearsal(exc: BaseException, request: dict) -> bool:
    """True when offline mode failed only because SQLite batch operations
    need a live connection, and a rehearsal can stand in (not for a
    Flask-Migrate app, whose engine cannot be pointed at a scratch copy)."""
    from .database import sqlite_path

    return ("requires a live database connection" in str(exc)
            and bool(request.get("url")) and sqlite_path(request["url"]) is not None
            and not request.get("flask_app"))


@contextmanager
def only_database(backend: str, database: str):
    """Within this block every SQLAlchemy connection must go to database
    ``database`` of a ``backend`` ("postgresql", "mysql") server — the
    scratch copy of a dry run. Checked before the driver connects and before
    every statement, like :func:`scratch_only`.

    :raises RehearsalRefused: from the connect or execute that would escape.
    """

    family = {"mariadb": "mysql"}.get(backend, backend)

    def name_of(dialect) -> str:
        return {"mariadb": "mysql"}.get(dialect.name, dialect.name)

    def check_connect(dialect, conn_rec, cargs, cparams):
        target = cparams.get("dbname") or cparams.get("database") or cparams.get("db")
        if name_of(dialect) != family or target != database:
            raise RehearsalRefused(REFUSED.format(where=target or "it"))

    def check_execute(conn, cursor, statement, parameters, context, executemany):
        if name_of(conn.dialect) != family or conn.engine.url.database != database:
            raise RehearsalRefused(REFUSED.format(where=conn.engine.url.database or "it"))

    with _guarded(check_connect, check_execute):
        yield
