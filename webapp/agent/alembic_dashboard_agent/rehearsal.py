"""Rehearsals: run migrations on a scratch SQLite copy to capture their SQL.

Alembic cannot render batch operations as offline SQL on SQLite (they reflect
the table), so the statements are captured from a run on a scratch file.
The real database must never be touched: :func:`scratch_only` refuses, before
the driver connects, any connection that is not to the scratch file — also
those that an ``env.py`` makes with a URL of its own choosing — and it is in
force from the first statement of a rehearsal to its last. The connection
actually made is checked too (:mod:`.guards`): an env.py that opens its own
(``creator=``) or ``ATTACH``es another file is stopped before its first
statement.
"""

from __future__ import annotations

import io
import os
import sqlite3
import tempfile
from contextlib import contextmanager

from .capture import capture
from .config import alembic_config
from .guards import ConnectionRefused, Rule, connections_follow
from .protocol import mark_phase


class RehearsalRefused(ConnectionRefused):
    """A rehearsal would have touched a database other than its scratch copy."""


REFUSED = ("env.py connected to a database other than the rehearsal's scratch copy (it "
           "chooses its own URL instead of reading sqlalchemy.url), so the rehearsal was "
           "stopped before connecting; nothing was run on {where}. Rehearsals (and the SQL "
           "of SQLite batch operations) are not available for this target.")
CONNECTION_REFUSED = (
    "env.py connected to a database other than the rehearsal's scratch copy ({where}): it "
    "opens its own connection (a creator=, an ATTACH, a URL of its own) instead of using "
    "sqlalchemy.url, so the rehearsal was stopped before any statement ran there. "
    "Rehearsals (and the SQL of SQLite batch operations) are not available for this target.")


def _scratch_rule(family: str, database: str) -> Rule:
    """The actual-connection check of a rehearsal (:mod:`.guards`): only
    ``database``; writable (it is the copy); SQLite ATTACH denied."""
    return Rule(family, database, read_only=False, refused=RehearsalRefused,
                message=CONNECTION_REFUSED)


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

    Checked three times: when a driver connection is about to be opened
    (``do_connect``, before a file is created or a server contacted), on the
    connection actually opened (``PRAGMA database_list``: the main file is
    the scratch file, nothing attached; ATTACH denied — also for a custom
    ``creator=``), and before every statement (for a connection opened earlier).

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

    with _guarded(check_connect, check_execute), \
            connections_follow(_scratch_rule("sqlite", allowed)):
        yield


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


def on_copy(request: dict, real_path: str, fn, destination, header: str | None = None) -> str:
    """Rehearse ``fn``'s steps on a copy of the target's SQLite file
    (``real_path``, opened read-only; sqlite3 backup API); ``header``: the
    captured SQL's first comment lines (default: why batch operations are
    captured, :data:`.capture.BATCH_HEADER`).

    :raises RehearsalRefused: env.py reached for another database.
    """
    with tempfile.TemporaryDirectory(prefix="alembic-rehearsal-") as tmp:
        copy = os.path.join(tmp, "rehearsal.db")
        if os.path.exists(real_path):
            copy_sqlite(real_path, copy)
        config = alembic_config(dict(request, url="sqlite:///" + copy), io.StringIO())
        try:
            with scratch_only(copy):
                if header is None:
                    return capture(config, fn, destination)
                return capture(config, fn, destination, header)
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
                return capture(config, fn, destination)
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
    scratch copy of a dry run. Checked before the driver connects, on the
    connection actually made (``current_database()`` / ``DATABASE()``), and
    before every statement, like :func:`scratch_only`.

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

    with _guarded(check_connect, check_execute), \
            connections_follow(_scratch_rule(family, database)):
        yield
