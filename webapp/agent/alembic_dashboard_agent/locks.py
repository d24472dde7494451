"""The migration lock held on the target database itself for a whole job.

MySQL/MariaDB: ``GET_LOCK`` on a dedicated connection; PostgreSQL:
session-level ``pg_try_advisory_lock``; SQLite: ``flock`` on a file beside
the database. All are released by the server or the OS when the holding
process dies, however it dies. The key functions are standard library only:
the dashboard uses them too, to ask whether a job's lock is still held.
"""

from __future__ import annotations

import hashlib


class TargetBusy(Exception):
    """Another process holds this target's migration lock."""


def mysql_lock_key(name: str, database: str | None) -> str:
    """The ``GET_LOCK`` name for target ``name`` on schema ``database`` (at
    most 64 characters). ``GET_LOCK`` names are server-wide, so the schema
    is part of the key: two targets of the same name on different schemas
    of one server (two dashboards, two test runs) never block each other."""
    key = f"{database or ''}\0{name}"
    return "alembic-dashboard:" + hashlib.sha256(key.encode()).hexdigest()[:40]


def postgresql_lock_key(name: str) -> int:
    """The signed 64-bit ``pg_advisory_lock`` key for target ``name``."""
    digest = hashlib.sha256(("alembic-dashboard:" + name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def sqlite_lock_path(database: str) -> str:
    """The lock file beside a SQLite database file."""
    return (database if database != ":memory:" else "memory") + ".dashboard-lock"


class TargetLock:
    """Hold target ``name``'s migration lock on the database at ``url``."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.engine = None
        self.connection = None
        self.file = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        :raises TargetBusy: another process holds it.
        :raises FileNotFoundError: a SQLite database file that does not exist
            (a lock file is never created beside nothing).
        """
        import os

        from sqlalchemy import text

        from .database import engine, sqlite_path

        path = sqlite_path(self.url)
        if path is not None:
            import fcntl

            if path != ":memory:" and not os.path.exists(path):
                raise FileNotFoundError(f"the SQLite database {path} does not exist")
            lock_path = sqlite_lock_path(path)
            # private like the database beside it (0600, whatever the umask)
            self.file = open(lock_path, "a+", opener=lambda p, f: os.open(p, f, 0o600))  # noqa: SIM115
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.file.close()
                self.file = None
                raise TargetBusy(f"lock file {lock_path} is held by another process") from None
            return
        self.engine = engine(self.url)
        self.connection = self.engine.connect()
        dialect = self.engine.dialect.name
        if dialect in ("mysql", "mariadb"):
            key = mysql_lock_key(self.name, self.engine.url.database)
            got = self.connection.execute(text("SELECT GET_LOCK(:k, 0)"), {"k": key}).scalar()
        elif dialect == "postgresql":
            got = self.connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                          {"k": postgresql_lock_key(self.name)}).scalar()
        else:
            raise ValueError(f"no migration lock for dialect {dialect}")
        self.connection.commit()
        if not got:
            self.release()
            raise TargetBusy(f"the {dialect} lock for this target is held by another session")

    def release(self) -> None:
        """Let the lock go: released explicitly, so it is free when this
        returns (a closed session's locks are dropped by the server a moment
        later, after it has processed the disconnect); the session is closed
        whatever happens."""
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.connection is not None:
            try:
                self._release_on_server()
            except Exception:  # noqa: BLE001 - the connection is gone: so is the lock
                pass
            self.connection.close()
            self.connection = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def _release_on_server(self) -> None:
        """``RELEASE_LOCK`` / ``pg_advisory_unlock`` on the holding session."""
        from sqlalchemy import text

        dialect = self.engine.dialect.name
        if dialect in ("mysql", "mariadb"):
            key = mysql_lock_key(self.name, self.engine.url.database)
            self.connection.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": key})
        elif dialect == "postgresql":
            self.connection.execute(text("SELECT pg_advisory_unlock(:k)"),
                                    {"k": postgresql_lock_key(self.name)})
        self.connection.commit()
