"""The locks a rehearsal's statements actually took (PostgreSQL): right after
each statement, on the migration's own connection and inside its
transaction (before the commit), ``pg_locks`` is read for
``pg_backend_pid()``, and the strongest mode held on each table or index is
kept, with the modes the statement newly took (stronger than what the
transaction held before it).

The read goes through a second DB-API cursor of the same connection, so it
fires no SQLAlchemy event and is not itself recorded. On MySQL/MariaDB
:func:`watch_for` gives :class:`.online_ddl.AlgorithmWatch` instead (the
online-DDL clause each ALTER was accepted with); SQLite records nothing.
"""

from __future__ import annotations

import re

#: pg_locks modes, weakest first
PG_MODES = ("AccessShareLock", "RowShareLock", "RowExclusiveLock",
            "ShareUpdateExclusiveLock", "ShareLock", "ShareRowExclusiveLock",
            "ExclusiveLock", "AccessExclusiveLock")
_HELD = ("SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
         "WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted "
         "AND c.relkind IN ('r', 'p', 'i', 'm') AND c.relnamespace <> "
         "'pg_catalog'::regnamespace")
_MAX_STATEMENTS = 500
_STATEMENT_MAX = 200


def mode_name(pg_mode: str) -> str:
    """``"AccessExclusiveLock"`` -> ``"ACCESS EXCLUSIVE"`` (the forecast's names)."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", pg_mode.removesuffix("Lock")).upper()


class LockWatch:
    """Context manager recording :attr:`observed`: ``[{"revision",
    "statement", "locks": {relation: mode}, "taken": {relation: mode}}]``
    for each statement run while it is active (modes as :func:`mode_name`
    gives them; ``revision`` the last of ``started``, the revisions whose
    migration had begun). Active only when ``url`` is PostgreSQL."""

    def __init__(self, url: str, started: list[str]):
        from sqlalchemy.engine import make_url

        self.active = make_url(url).get_backend_name() == "postgresql"
        self.started = started
        self.observed: list[dict] = []
        self._held: dict[int, dict[str, str]] = {}  # per DB-API connection

    def __enter__(self) -> LockWatch:
        if self.active:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.listen(Engine, "after_cursor_execute", self._after)
            event.listen(Engine, "commit", self._ended)
            event.listen(Engine, "rollback", self._ended)
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.remove(Engine, "after_cursor_execute", self._after)
            event.remove(Engine, "commit", self._ended)
            event.remove(Engine, "rollback", self._ended)

    def _ended(self, conn) -> None:
        """A commit or rollback released the transaction's locks."""
        self._held.pop(id(conn.connection.dbapi_connection), None)

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if len(self.observed) >= _MAX_STATEMENTS or \
                statement.lstrip()[:6].upper() in ("SELECT", "SHOW", "SET"):
            return
        dbapi = cursor.connection
        reader = dbapi.cursor()
        try:
            reader.execute(_HELD)
            rows = reader.fetchall()
        finally:
            reader.close()
        now: dict[str, str] = {}
        for relation, mode in rows:
            if mode in PG_MODES and PG_MODES.index(mode) >= PG_MODES.index(
                    now.get(relation, PG_MODES[0])):
                now[relation] = mode
        before = self._held.get(id(dbapi), {})
        taken = {rel: mode for rel, mode in now.items()
                 if rel not in before or PG_MODES.index(mode) > PG_MODES.index(before[rel])}
        self._held[id(dbapi)] = now
        self.observed.append({
            "revision": self.started[-1] if self.started else None,
            "statement": " ".join(statement.split())[:_STATEMENT_MAX],
            "locks": {rel: mode_name(mode) for rel, mode in sorted(now.items())},
            "taken": {rel: mode_name(mode) for rel, mode in sorted(taken.items())}})


def watch_for(url: str, started: list[str]):
    """The rehearsal's watch for the scratch copy at ``url``: :class:`LockWatch`
    (PostgreSQL), :class:`.online_ddl.AlgorithmWatch` (MySQL/MariaDB), or an
    inactive :class:`LockWatch` (SQLite); each a context manager with
    ``observed``, the rehearsal's ``observed_locks``."""
    from sqlalchemy.engine import make_url

    from .online_ddl import AlgorithmWatch

    if make_url(url).get_backend_name() in ("mysql", "mariadb"):
        return AlgorithmWatch(url, started)
    return LockWatch(url, started)
