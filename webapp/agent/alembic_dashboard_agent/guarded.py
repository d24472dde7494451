"""The online run under the target's lock guard: retries, blockers, INVALID indexes.

:class:`GuardedRun` is what :func:`.run.run` wraps the migration in, once
the dashboard's migration lock is held. It

- sets the guard on every connection env.py configures (:func:`.lock_guard.apply`)
  and points the blocked-by :class:`.blockers.Watch` at that session;
- retries a statement that timed out on its lock, inside the same revision,
  where the database cannot roll the revision back (Alembic's impl says
  ``transactional_ddl`` False: MySQL/MariaDB, SQLite) and for statements in
  an ``autocommit_block()``; on transactional DDL (PostgreSQL) the timed-out
  statement's transaction is rolled back by env.py and :meth:`retry_whole`
  tells the run to start env.py again from the database's current revisions,
  so the revision's transaction is retried whole;
- never retries ``CREATE INDEX CONCURRENTLY`` (a failed one leaves an INVALID
  index) and reports the INVALID indexes the run left behind;
- drops, before the migration, the INVALID indexes the job's plan names
  (:meth:`GuardedRun.drop_invalid`).
"""

from __future__ import annotations

import time

from . import alembic_private, lock_guard
from .blockers import Watch
from .config import CONFIGURE_HOOKS

_INVALID_INDEXES = """
SELECT n.nspname, c.relname, t.relname FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1, 2"""


def invalid_indexes(url: str) -> list[dict]:
    """INVALID indexes of a PostgreSQL database (``[{"schema", "index",
    "table"}]``; ``[]`` for other dialects), read on a read-only connection."""
    from sqlalchemy import text

    from .database import engine, sqlite_path
    from .readonly import read_only_url

    if sqlite_path(url) is not None or not url.startswith("postgresql"):
        return []
    eng = engine(read_only_url(url))
    try:
        with eng.connect() as connection:
            rows = connection.execute(text(_INVALID_INDEXES)).all()
    finally:
        eng.dispose()
    return [{"schema": r[0], "index": r[1], "table": r[2]} for r in rows]


def _summary(impl, construct) -> str:
    try:
        text = str(construct.compile(dialect=impl.dialect))
    except Exception:  # noqa: BLE001 - only for the log line
        text = type(construct).__name__
    text = " ".join(text.split())
    return text[:120] + ("…" if len(text) > 120 else "")


class GuardedRun:
    """Context manager around the migration of one ``run`` order (see the module)."""

    def __init__(self, request: dict, url: str) -> None:
        self.guard = lock_guard.Guard.from_request(request)
        self.url = url
        self.watch = Watch(url, request.get("watch_file"))
        self.transactional = True
        self.dialect: str | None = None
        self.attempts = 0  # whole retries done
        self._undo = None
        self._invalid_before: set[tuple] = set()
        self._entered = False

    def __enter__(self) -> GuardedRun:
        self._entered = True
        try:
            self._invalid_before = {tuple(i.values()) for i in invalid_indexes(self.url)}
        except Exception:  # noqa: BLE001 - a report only; the run itself says what is wrong
            self._invalid_before = set()
        CONFIGURE_HOOKS.append(self._on_configure)
        self._undo = alembic_private.wrap_impl_exec(self._execute)
        self.watch.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.watch.stop()
        if self._undo is not None:
            self._undo()
        if self._on_configure in CONFIGURE_HOOKS:
            CONFIGURE_HOOKS.remove(self._on_configure)

    def _on_configure(self, environment_context, connection) -> None:
        impl = environment_context.get_context().impl
        self.transactional = bool(impl.transactional_ddl)
        if self.dialect is None:
            self.dialect = connection.dialect.name
            print(f"[dashboard] {lock_guard.describe(self.dialect, self.guard)}", flush=True)
        self.watch.session = lock_guard.apply(connection, self.guard)

    def _execute(self, execute, impl, construct):
        if impl.as_sql:
            return execute()
        connection = impl.connection
        autocommit = connection is not None and \
            connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        if self.transactional and not autocommit:
            return execute()  # the transaction is retried whole (retry_whole)
        try:
            if autocommit and lock_guard.is_concurrent_index(_summary(impl, construct)):
                return execute()  # never retried: a failed one leaves an INVALID index
            return lock_guard.run_with_retries(execute, self.guard,
                                               what=_summary(impl, construct))
        except Exception as exc:
            exc.lock_guard_done = True  # type: ignore[attr-defined]
            raise

    def retry_whole(self, exc: BaseException) -> bool:
        """Whether the run should start env.py again after ``exc`` (a lock
        timeout in a rolled-back transaction, retries left); waits the
        backoff first and says so in the log."""
        if not lock_guard.is_lock_timeout(exc) or getattr(exc, "lock_guard_done", False) \
                or self.attempts >= self.guard.lock_retries:
            return False
        self.attempts += 1
        pause = lock_guard.backoff(self.attempts)
        print(f"[dashboard] lock timeout (the revision's transaction was rolled back); "
              f"retry {self.attempts} of {self.guard.lock_retries} in {pause:g} s", flush=True)
        time.sleep(pause)
        return True

    def report(self, result: dict, exc: BaseException | None) -> None:
        """Add to ``result``: ``blocked_by`` (the last sessions seen blocking
        the migration), ``lock_failure`` (``{"attempts", "lock_timeout",
        "lock_retries"}``) when it gave up on a lock, and ``invalid_indexes``
        left by this run."""
        if self.watch.seen:
            result["blocked_by"] = self.watch.seen
        if exc is not None and lock_guard.is_lock_timeout(exc):
            attempts = getattr(exc, "lock_attempts", None) or self.attempts + 1
            result["lock_failure"] = {"attempts": attempts,
                                      "lock_timeout": self.guard.lock_timeout,
                                      "lock_retries": self.guard.lock_retries}
        if not self._entered:
            return
        try:
            left = [i for i in invalid_indexes(self.url)
                    if tuple(i.values()) not in self._invalid_before]
        except Exception:  # noqa: BLE001 - the database may be gone: the error says so
            left = []
        if left:
            result["invalid_indexes"] = left

    def drop_invalid(self, indexes: list[dict]) -> None:
        """``DROP INDEX CONCURRENTLY IF EXISTS "schema"."name"`` for each of
        ``indexes`` (``[{"schema", "name"}]``, the plan's) that is still
        INVALID, on an autocommit connection under the guard (its lock
        timeout, retried as a statement), watched by the blocked-by watch;
        one that is gone or valid now is left alone (said in the log).

        :raises sqlalchemy.exc.DBAPIError: a drop failed (after its retries).
        """
        from .database import engine

        if not indexes:
            return
        invalid = {(i["schema"], i["index"]) for i in invalid_indexes(self.url)}
        eng = engine(self.url).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with eng.connect() as connection:
                self.watch.session = lock_guard.apply(connection, self.guard)
                for index in indexes:
                    name = ".".join('"' + part.replace('"', '""') + '"'
                                    for part in (index["schema"], index["name"]))
                    if (index["schema"], index["name"]) not in invalid:
                        print(f"[dashboard] {name} is no longer an INVALID index: not dropped",
                              flush=True)
                        continue
                    statement = f"DROP INDEX CONCURRENTLY IF EXISTS {name}"
                    print(f"[dashboard] {statement} (the plan drops this INVALID index)",
                          flush=True)
                    lock_guard.run_with_retries(
                        lambda s=statement: connection.exec_driver_sql(s), self.guard,
                        what=statement)
        finally:
            eng.dispose()
