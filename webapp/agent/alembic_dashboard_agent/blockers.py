"""Who is blocking the migration: watched from a connection of its own.

While a job runs, :class:`Watch` polls the target database every
:data:`POLL_INTERVAL` seconds on its own connection (never the migration's)
for the sessions that block the migration's session and writes what it
sees to the job's ``blocked.json`` (replaced atomically), which the
dashboard's job process copies to the job row with the log:
``{"session": id, "waiting": bool, "blockers": [...], "seen": [...]}``,
``seen`` being the last non-empty list (kept when the job fails on a lock).

Each blocker is ``{"pid", "user", "application", "state", "since", "query"}``
(``since``: UTC ISO 8601 start of its transaction, else of its query):

- PostgreSQL: ``pg_blocking_pids(migration pid)`` joined with ``pg_stat_activity``;
- MySQL/MariaDB: InnoDB row-lock waits (``information_schema.INNODB_LOCK_WAITS``)
  and, while the migration is "Waiting for table metadata lock", the sessions
  with an open transaction (``INNODB_TRX``) whose default database is the
  target's: without ``performance_schema`` the server does not say which of
  them holds the metadata lock, so every such open transaction is a
  candidate, its current statement (``PROCESSLIST.INFO``, empty for an idle
  one) as its query.

:func:`cancel` is the admin's action: cancel one blocker's query, only if it
blocks the migration's session at that moment (checked in the same statement
on PostgreSQL). Standard library and SQLAlchemy only.
"""

from __future__ import annotations

import json
import os
import threading

POLL_INTERVAL = 0.25  # seconds

_PG_BLOCKERS = """
SELECT a.pid, a.usename, a.application_name, a.state,
       COALESCE(a.xact_start, a.query_start, a.backend_start) AS since, a.query
FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(:session)) ORDER BY 5, 1"""
_MY_STATE = "SELECT STATE FROM information_schema.PROCESSLIST WHERE ID = :session"
_MY_ROW_LOCK_BLOCKERS = """
SELECT b.trx_mysql_thread_id, p.USER, p.HOST, p.COMMAND, b.trx_started, p.INFO
FROM information_schema.INNODB_LOCK_WAITS w
JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = b.trx_mysql_thread_id
WHERE r.trx_mysql_thread_id = :session"""
_MY_OPEN_TRANSACTIONS = """
SELECT t.trx_mysql_thread_id, p.USER, p.HOST, p.COMMAND, t.trx_started, p.INFO
FROM information_schema.INNODB_TRX t
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
WHERE t.trx_mysql_thread_id NOT IN (:session, CONNECTION_ID()) AND p.DB = DATABASE()
ORDER BY t.trx_started"""


def _iso(value) -> str | None:
    if value is None:
        return None
    if getattr(value, "tzinfo", None) is not None:
        from datetime import UTC

        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds") + "Z"


def read_blockers(connection, session: int) -> tuple[bool, list[dict]]:
    """``(waiting, blockers)`` of the migration session ``session``, read on
    ``connection`` (a SQLAlchemy Connection that is not the migration's)."""
    from sqlalchemy import text

    name = connection.dialect.name
    if name == "postgresql":
        rows = connection.execute(text(_PG_BLOCKERS), {"session": session}).all()
        connection.rollback()
        found = [{"pid": r[0], "user": r[1], "application": r[2] or None, "state": r[3],
                  "since": _iso(r[4]), "query": r[5]} for r in rows]
        return bool(found), found
    if name in ("mysql", "mariadb"):
        state = connection.execute(text(_MY_STATE), {"session": session}).scalar() or ""
        rows = connection.execute(text(_MY_ROW_LOCK_BLOCKERS), {"session": session}).all()
        if not rows and "metadata lock" in state.lower():
            rows = connection.execute(text(_MY_OPEN_TRANSACTIONS), {"session": session}).all()
        connection.rollback()
        found = [{"pid": r[0], "user": r[1], "application": r[2], "state": r[3],
                  "since": _iso(r[4]), "query": r[5]} for r in rows]
        return bool(found) or "lock" in state.lower(), found
    return False, []


def _write(path: str, data: dict) -> None:
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(temporary, path)


class Watch:
    """Poll the blockers of the migration's session in a daemon thread.

    :param url: the target's URL (a connection of the watch's own is opened).
    :param path: the ``blocked.json`` to write, or None (only :attr:`seen` is kept).
    ``session`` is set (and changed on a retry) by whoever knows the
    migration's session id; until then nothing is read.
    """

    def __init__(self, url: str, path: str | None) -> None:
        self.url, self.path = url, path
        self.session: int | None = None
        self.seen: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (nothing for SQLite: it has no sessions to name)."""
        from .database import sqlite_path

        if sqlite_path(self.url) is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="blocked-by", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread (at most a few seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        from .database import engine
        from .readonly import read_only_url

        eng = engine(read_only_url(self.url))
        last = None
        try:
            with eng.connect() as connection:
                while not self._stop.wait(POLL_INTERVAL):
                    if self.session is None:
                        continue
                    waiting, blockers = read_blockers(connection, self.session)
                    if blockers:
                        self.seen = blockers
                    now = {"session": self.session, "waiting": waiting,
                           "blockers": blockers, "seen": self.seen}
                    # nothing is written until the migration first waits: a job
                    # that never waited has no blocked_by at all
                    if now != last and self.path and (waiting or self.seen):
                        _write(self.path, now)
                        last = now
        except Exception as exc:  # noqa: BLE001 - the watch must never break the migration
            print(f"[dashboard] blocked-by watch stopped: {type(exc).__name__}: {exc}",
                  flush=True)
        finally:
            eng.dispose()


def cancel(request: dict) -> dict:
    """Op ``cancel_blocker`` (``session``: the migration's session id,
    ``pid``: the blocker): cancel the blocker's current query
    (``pg_cancel_backend``, ``KILL QUERY``) only when it blocks ``session`` now.

    :return: ``{"cancelled": bool, "blocking": bool}`` (``blocking`` False:
        it no longer blocks the migration, nothing was done).
    """
    from sqlalchemy import text

    from .database import engine

    session, pid = int(request["session"]), int(request["pid"])
    eng = engine(request["url"])
    try:
        with eng.connect() as connection:
            if connection.dialect.name == "postgresql":
                row = connection.execute(text(
                    "SELECT pg_cancel_backend(:pid) WHERE :pid = ANY(pg_blocking_pids(:session))"),
                    {"pid": pid, "session": session}).first()
                connection.commit()
                return {"blocking": row is not None, "cancelled": bool(row and row[0])}
            _, blockers = read_blockers(connection, session)
            if pid not in {b["pid"] for b in blockers}:
                return {"blocking": False, "cancelled": False}
            connection.execute(text(f"KILL QUERY {pid:d}"))
            return {"blocking": True, "cancelled": True}
    finally:
        eng.dispose()
