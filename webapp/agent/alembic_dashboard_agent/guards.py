"""Checks on the connections a target's own code actually opens.

A target's env.py is the target's code: it may build its engine with a
``creator=`` of its own (SQLAlchemy's ``do_connect`` never fires then), pick
its own URL, or ``ATTACH`` another SQLite file. So the URL the agent hands it
proves nothing. Two rules, checked on every DBAPI connection of the block
(SQLAlchemy's Pool ``first_connect``/``connect``/``checkout`` events, which
fire for a custom ``creator`` too), before any statement of env.py runs on it:

- a **read** (plans, offline SQL, the autogenerate preview, current
  revisions): the connection must be to the target's own database, and is
  made read-only *in the database* — SQLite ``PRAGMA query_only`` plus an
  authorizer that denies ``ATTACH`` and turning ``query_only`` off;
  PostgreSQL ``default_transaction_read_only``; MySQL/MariaDB ``SET SESSION
  TRANSACTION READ ONLY``. The URL handed to env.py is read-only from the
  driver's first byte as well (:func:`.readonly.read_only_url`).
- a **rehearsal** (a scratch copy): the connection must be to the scratch
  database (SQLite: its main file is the scratch file, nothing attached,
  ``ATTACH`` denied; PostgreSQL/MySQL: ``current_database()`` /
  ``DATABASE()`` is the scratch one).

Anything else raises :class:`ConnectionRefused` (a subclass chosen by the
caller) from the connect, so env.py never gets the connection.

What this cannot stop: Python code in env.py or a revision can undo a
session setting (``SET SESSION TRANSACTION READ WRITE``, ``PRAGMA
query_only=OFF`` on a raw connection after removing the authorizer), or write
files without a database driver. A read-only account (``readonly_url_env``)
is what the database enforces whatever the code does.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field

_MARK = "alembic_dashboard_guard"  # connection_record.info key: the rule that vetted it
_ACTIVE: list[Rule] = []  # innermost rule last (a rehearsal inside a plan)

# driver modules (top-level package of the DBAPI connection's class) -> family
_DRIVERS = {"pymysql": "mysql", "MySQLdb": "mysql", "mysql": "mysql", "mariadb": "mysql",
            "psycopg": "postgresql", "psycopg2": "postgresql", "pg8000": "postgresql"}
# pragmas a read must not set (query_only: the guard itself; the others write the file)
_GUARDED_PRAGMAS = {"query_only", "writable_schema", "journal_mode", "schema_version"}


class ConnectionRefused(Exception):
    """A connection went to a database it may not, or could not be made read-only."""


@dataclass
class Rule:
    """Where connections of a block may go.

    :ivar family: "sqlite", "mysql" or "postgresql".
    :ivar database: SQLite: the real path of the file ("" for an in-memory
        database); others: the database (schema) name; None: any database
        of the family (a Flask-Migrate app that names its own).
    :ivar read_only: make each connection read-only in the database.
    :ivar refused: the exception class raised, with ``message`` formatted
        with ``where`` and ``allowed``.
    """

    family: str
    database: str | None
    read_only: bool
    refused: type[ConnectionRefused]
    message: str
    token: object = field(default_factory=object)

    def refuse(self, where: str | None) -> ConnectionRefused:
        """The exception for a connection to ``where``."""
        return self.refused(self.message.format(where=where or "another database",
                                                allowed=self.database or "it"))


def rule_active() -> bool:
    """True inside :func:`connections_follow` with a rule (a read path or a
    rehearsal): its rule vets every new connection."""
    return bool(_ACTIVE)


def family_of(backend: str) -> str:
    """"mysql" for MariaDB too; otherwise SQLAlchemy's backend name."""
    return {"mariadb": "mysql"}.get(backend, backend)


def sqlite_file(database: str | None) -> str:
    """The file of a SQLite URL's database part (URI form ``file:...?...``
    unwrapped), "" for an in-memory database."""
    from urllib.parse import unquote

    database = database or ""
    if database.startswith("file:"):
        database = unquote(database[5:].split("?", 1)[0])
    return "" if database in ("", ":memory:") else os.path.realpath(database)


def driver_family(dbapi_connection) -> str | None:
    """The family ("sqlite", "mysql", "postgresql") of a DBAPI connection, by
    its driver; None for a driver the guards do not know."""
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    if isinstance(raw, sqlite3.Connection):
        return "sqlite"
    return _DRIVERS.get(type(raw).__module__.split(".", 1)[0])


def _query(dbapi_connection, statement: str) -> list[tuple]:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(statement)
        return list(cursor.fetchall()) if cursor.description else []
    finally:
        cursor.close()


def _authorizer(read_only: bool):
    """A sqlite3 authorizer: no ATTACH/DETACH; on a read, no setting of the
    pragmas that would lift ``query_only`` or write the file."""
    deny, ok = sqlite3.SQLITE_DENY, sqlite3.SQLITE_OK

    def authorize(action, arg1, arg2, dbname, source):
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return deny
        if read_only and action == sqlite3.SQLITE_PRAGMA and arg2 is not None \
                and (arg1 or "").lower() in _GUARDED_PRAGMAS:
            return deny
        return ok

    return authorize


def _vet_sqlite(raw, rule: Rule) -> None:
    rows = _query(raw, "PRAGMA database_list")  # (seq, name, file)
    main = next((row[2] or "" for row in rows if row[1] == "main"), "")
    attached = [row[2] or row[1] for row in rows if row[1] not in ("main", "temp")]
    main = os.path.realpath(main) if main else ""
    if attached:
        raise rule.refuse(", ".join(attached))
    if rule.database is not None and main != rule.database:
        raise rule.refuse(main or "an in-memory database")
    if rule.read_only:
        _query(raw, "PRAGMA query_only = ON")
    raw.set_authorizer(_authorizer(rule.read_only))


def _vet_server(dbapi_connection, family: str, rule: Rule) -> None:
    if rule.read_only:
        # session-wide, for every later transaction; before anything is read
        _query(dbapi_connection, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
               if family == "postgresql" else "SET SESSION TRANSACTION READ ONLY")
    current = _query(dbapi_connection, "SELECT current_database()" if family == "postgresql"
                     else "SELECT DATABASE()")[0][0]
    # PostgreSQL's SET is transactional: commit it (nothing else was done)
    dbapi_connection.commit()
    if rule.database is not None and current != rule.database:
        raise rule.refuse(current)


def vet(dbapi_connection, rule: Rule) -> None:
    """Check ``dbapi_connection`` (just opened, or just checked out of a pool)
    against ``rule`` and apply its read-only setting.

    :raises ConnectionRefused: another database, another dialect, or a
        driver the agent cannot check.
    """
    family = driver_family(dbapi_connection)
    if family is None or family != rule.family:
        raise rule.refuse(f"a {family or type(dbapi_connection).__module__} connection")
    if family == "sqlite":
        _vet_sqlite(getattr(dbapi_connection, "driver_connection", dbapi_connection), rule)
    else:
        _vet_server(dbapi_connection, family, rule)


def _on_connection(dbapi_connection, connection_record, *proxy) -> None:
    """Pool first_connect / connect / checkout: vet once per connection and rule."""
    if not _ACTIVE:
        return
    rule = _ACTIVE[-1]
    if connection_record.info.get(_MARK) is rule.token:
        return
    try:
        vet(dbapi_connection, rule)
    except ConnectionRefused:
        connection_record.info.pop(_MARK, None)
        raise
    connection_record.info[_MARK] = rule.token


_EVENTS = ("first_connect", "connect", "checkout")


@contextmanager
def connections_follow(rule: Rule | None):
    """Within this block, every new or checked-out SQLAlchemy connection is
    vetted against ``rule`` (:func:`vet`); an inner block's rule wins (a
    rehearsal on a scratch copy inside a plan). ``rule`` None: no check.

    Listeners on the Pool class run before each engine's own, so the check
    comes before SQLAlchemy's first-connect queries and env.py's listeners.
    """
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    if rule is None:
        yield
        return
    _ACTIVE.append(rule)
    if len(_ACTIVE) == 1:
        for name in _EVENTS:
            event.listen(Pool, name, _on_connection)
    try:
        yield
    finally:
        _ACTIVE.remove(rule)
        if not _ACTIVE:
            for name in _EVENTS:
                event.remove(Pool, name, _on_connection)
