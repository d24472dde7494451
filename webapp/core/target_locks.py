"""Ask a target database whether a job's migration lock is held right now.

The agent takes the lock (:mod:`webapp.agent.alembic_dashboard_agent.locks`);
this module only looks, with the same keys, and never takes it for longer
than a non-blocking test.
"""

from __future__ import annotations

import fcntl
import os
from urllib.parse import unquote

from sqlalchemy import text
from sqlalchemy.engine import Engine

from ..agent.alembic_dashboard_agent.locks import (
    mysql_lock_key,
    postgresql_lock_key,
    sqlite_lock_path,
)


def migration_lock_held(engine: Engine, target_name: str) -> bool | None:
    """True when target ``target_name``'s migration lock is held on the
    database of ``engine``, False when it is free, None when that cannot be
    told (database unreachable, unknown dialect).

    MySQL/MariaDB: ``IS_USED_LOCK``; PostgreSQL: ``pg_locks`` (advisory lock,
    64-bit key as classid/objid); SQLite: a non-blocking ``flock`` test of
    the lock file beside the database.
    """
    dialect = engine.dialect.name
    try:
        if dialect == "sqlite":
            database = engine.url.database or ":memory:"
            if database.startswith("file:"):  # read-only URI form (status engines)
                database = unquote(database[5:].split("?", 1)[0])
            path = sqlite_lock_path(database)
            if not os.path.exists(path):
                return False
            with open(path, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                fcntl.flock(f, fcntl.LOCK_UN)
                return False
        with engine.connect() as connection:
            if dialect in ("mysql", "mariadb"):
                key = mysql_lock_key(target_name, engine.url.database)
                holder = connection.execute(text("SELECT IS_USED_LOCK(:k)"), {"k": key}).scalar()
                return holder is not None
            if dialect == "postgresql":
                key = postgresql_lock_key(target_name) & 0xFFFFFFFFFFFFFFFF
                count = connection.execute(text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid) "
                    "AND objsubid = 1 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"),
                    {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalar()
                return bool(count)
    except Exception:  # unreachable or refused: we cannot tell
        return None
    return None
