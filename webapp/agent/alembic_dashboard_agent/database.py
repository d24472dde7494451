"""The target database as the agent sees it: engines and current revisions."""

from __future__ import annotations

import os


def engine(url: str):
    """A SQLAlchemy engine without a pool (one short-lived process, one use)."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(url, poolclass=NullPool)


def sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (":memory:" for none), or None for other dialects."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return parsed.database or ":memory:"


def read_current(connection, version_table: str) -> list[str]:
    """Current heads read through ``connection`` (Alembic's MigrationContext)."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    return list(context.get_current_heads())


def current_heads(url: str, version_table: str) -> list[str]:
    """The database's current heads; [] for a SQLite file that does not exist
    (without creating it). Read through a connection the database opens
    read-only (:func:`.readonly.read_only_url`): this is the one connection of
    offline mode, and a job reads its before/after heads with it too."""
    from .readonly import read_only_url

    path = sqlite_path(url)
    if path not in (None, ":memory:") and not os.path.exists(path):
        return []
    eng = engine(read_only_url(url))
    try:
        with eng.connect() as connection:
            return read_current(connection, version_table)
    finally:
        eng.dispose()
