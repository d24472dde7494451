"""Lock-timeout guards on the migration's own connection, and their retries.

The order of a job (``run``) carries ``guard``: ``{"lock_timeout": s,
"statement_timeout": s, "lock_retries": n}`` (seconds, 0 = off), the
target's policy. :func:`apply` sets it on the connection env.py hands to
``context.configure`` — that is after the dashboard's own migration lock is
held (:class:`.locks.TargetLock` is taken before env.py runs):

- PostgreSQL: ``SET lock_timeout``, ``SET statement_timeout`` (session
  level and committed, so they stay through ``autocommit_block()``, which
  only changes the isolation level of the same session);
- MySQL/MariaDB: ``lock_wait_timeout`` (metadata locks, whole seconds) and
  ``innodb_lock_wait_timeout`` (row locks); ``max_statement_time`` (MariaDB)
  or ``max_execution_time`` (MySQL, SELECTs only) for the statement timeout;
- SQLite: ``PRAGMA busy_timeout``.

What a lock timeout is (:func:`is_lock_timeout`): PostgreSQL SQLSTATE
55P03 (``lock_not_available``), MySQL/MariaDB error 1205, SQLite "database
is locked". A statement timeout (PostgreSQL 57014) is never retried: it
would time out again.

Standard library and SQLAlchemy only (the agent runs in the target's interpreter).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

#: backoff before retry n (1-based): BACKOFF_FIRST * 2**(n-1), at most BACKOFF_MAX seconds
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
_PG_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_WAIT_TIMEOUT = 1205
_CONCURRENT = ("create index concurrently", "create unique index concurrently",
               "reindex index concurrently", "reindex table concurrently")


@dataclass(frozen=True)
class Guard:
    """A target's lock policy: seconds (0 = not set: the database's own
    setting applies) and retries after a lock timeout."""

    lock_timeout: float = 0
    statement_timeout: float = 0
    lock_retries: int = 0

    @classmethod
    def from_request(cls, request: dict) -> Guard:
        """The ``guard`` of a run order (absent: no guard, no retry)."""
        raw = request.get("guard") or {}
        return cls(float(raw.get("lock_timeout") or 0), float(raw.get("statement_timeout") or 0),
                   int(raw.get("lock_retries") or 0))

    @property
    def active(self) -> bool:
        """True when any timeout is set."""
        return bool(self.lock_timeout or self.statement_timeout)


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): 0.25, 0.5, 1, ... up to 5."""
    return min(BACKOFF_FIRST * 2 ** (attempt - 1), BACKOFF_MAX)


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def is_lock_timeout(exc: BaseException) -> bool:
    """True when ``exc`` (a SQLAlchemy ``DBAPIError`` or a driver error) is a
    statement that gave up waiting for a lock (see the module docstring)."""
    orig = getattr(exc, "orig", exc)
    if _sqlstate(exc) == _PG_LOCK_NOT_AVAILABLE:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == _MYSQL_LOCK_WAIT_TIMEOUT:
        return True
    return "database is locked" in str(orig).lower()


def is_concurrent_index(statement: object) -> bool:
    """True for ``CREATE [UNIQUE] INDEX CONCURRENTLY`` / ``REINDEX ... CONCURRENTLY``:
    a failed one leaves an INVALID index behind, so it is never retried."""
    text = " ".join(str(statement).lower().split())
    return any(text.startswith(prefix) or f" {prefix}" in text for prefix in _CONCURRENT)


def session_id(connection) -> int | None:
    """The server's id of ``connection``'s session (PostgreSQL backend pid,
    MySQL/MariaDB connection id), None for SQLite."""
    name = connection.dialect.name
    if name == "postgresql":
        return connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    if name in ("mysql", "mariadb"):
        return connection.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    return None


def _statements(dialect, guard: Guard) -> list[str]:
    name = dialect.name
    if name == "postgresql":  # a 0 is left to the server's (or the role's) own setting
        return ([f"SET lock_timeout = {int(guard.lock_timeout * 1000)}"]
                if guard.lock_timeout else []) + \
               ([f"SET statement_timeout = {int(guard.statement_timeout * 1000)}"]
                if guard.statement_timeout else [])
    if name in ("mysql", "mariadb"):
        found = []
        if guard.lock_timeout:
            seconds = max(1, round(guard.lock_timeout))  # both take whole seconds, at least 1
            found += [f"SET SESSION lock_wait_timeout = {seconds}",
                      f"SET SESSION innodb_lock_wait_timeout = {seconds}"]
        if guard.statement_timeout:
            if getattr(dialect, "is_mariadb", False):
                found.append(f"SET SESSION max_statement_time = {guard.statement_timeout:g}")
            else:
                found.append(f"SET SESSION max_execution_time = "
                             f"{int(guard.statement_timeout * 1000)}")
        return found
    if name == "sqlite" and guard.lock_timeout:
        return [f"PRAGMA busy_timeout = {int(guard.lock_timeout * 1000)}"]
    return []


def apply(connection, guard: Guard) -> int | None:
    """Set ``guard`` on the migration's ``connection`` (a SQLAlchemy
    Connection) and return its session id (:func:`session_id`).

    When env.py has not begun a transaction yet, the settings are committed
    at once (a rolled-back PostgreSQL transaction would undo a ``SET``);
    inside env.py's own transaction they are part of it. Nothing is set
    when the guard is off (the session id is still read, for the blocked-by
    watch)."""
    was_in_transaction = connection.in_transaction()
    if guard.active:
        for statement in _statements(connection.dialect, guard):
            connection.exec_driver_sql(statement)
    found = session_id(connection)
    if not was_in_transaction and connection.in_transaction():
        connection.commit()
    return found


def describe(dialect_name: str, guard: Guard) -> str:
    """The guard in words for the job's log."""
    if not guard.active:
        return "no lock guard (the target's policy sets no lock_timeout)"
    parts = [f"lock_timeout {guard.lock_timeout:g} s" if guard.lock_timeout else
             "no lock_timeout",
             f"statement_timeout {guard.statement_timeout:g} s" if guard.statement_timeout
             else "no statement_timeout", f"lock_retries {guard.lock_retries}"]
    return f"lock guard on {dialect_name}: " + ", ".join(parts)


def run_with_retries(execute, guard: Guard, *, what: str):
    """Call ``execute()``; when it fails on a lock timeout, wait
    :func:`backoff` and call it again, at most ``guard.lock_retries`` more
    times. Each retry is announced in the log. The last error is raised,
    with ``lock_attempts`` (how many tries) set on it."""
    attempt = 0
    while True:
        try:
            return execute()
        except Exception as exc:
            if not is_lock_timeout(exc) or attempt >= guard.lock_retries:
                if is_lock_timeout(exc):
                    exc.lock_attempts = attempt + 1  # type: ignore[attr-defined]
                raise
            attempt += 1
            pause = backoff(attempt)
            print(f"[dashboard] lock timeout on {what}; retry {attempt} of "
                  f"{guard.lock_retries} in {pause:g} s", flush=True)
            time.sleep(pause)
