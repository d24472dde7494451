"""Per-address limit on login attempts (Flask-Limiter).

The counts live in the storage named by ``RATELIMIT_STORAGE_URI``
(``DASHBOARD_RATELIMIT_STORAGE_URL``, else a ``redis://`` broker URL, else
``dashboard-db://``: :class:`DashboardDatabaseStorage`, a table of the
dashboard database). Either way every gunicorn worker and host shares them
(``memory://``, each worker on its own, only when configured explicitly).
The per-username lockout (:mod:`webapp.services.login_throttle`) is in the
dashboard database too.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, timedelta

import sqlalchemy as sa
from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits.storage import Storage

from .config import DATABASE_RATELIMIT_STORAGE
from .models import RateLimitCounter, utcnow

_COUNTERS = RateLimitCounter.__table__


def _row_key(key: str) -> str:
    """The fixed-length primary key of the limiter's ``key`` (any length)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _insert_if_missing(conn: sa.Connection, values: dict) -> int:
    """INSERT ``values`` unless the row exists; 1 when inserted, else 0."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        stmt = insert(_COUNTERS).values(values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        stmt = insert(_COUNTERS).values(values).on_conflict_do_nothing()
    else:  # mysql, mariadb
        stmt = sa.insert(_COUNTERS).values(values).prefix_with("IGNORE")
    return conn.execute(stmt).rowcount


class DashboardDatabaseStorage(Storage):
    """A `limits` storage (``dashboard-db://``) in the dashboard database's
    ``rate_limit_counters`` table, for the fixed-window strategy (Flask-
    Limiter's default): without Redis, every worker and host counts together.

    Each :meth:`incr` is one transaction: an ``UPDATE`` of the key's row
    (the database serialises concurrent UPDATEs of one row), an ``INSERT``
    when there is none yet, then the new count, read while the row is
    still locked. Runs inside a request or app context (``db.engine`` of
    the current app). Errors are SQLAlchemy's (:attr:`base_exceptions`).
    """

    STORAGE_SCHEME = [DATABASE_RATELIMIT_STORAGE.removesuffix("://")]

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False,
                 **options) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self) -> type[Exception]:
        """What a broken dashboard database raises."""
        return sa.exc.SQLAlchemyError

    @staticmethod
    def _engine() -> sa.Engine:
        from .extensions import db

        return db.engine

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add ``amount`` to ``key``'s count in its window (a new window of
        ``expiry`` seconds when the last one ended); return the new count."""
        row_key, now = _row_key(key), utcnow()
        ends = now + timedelta(seconds=expiry)
        c = _COUNTERS.c
        expired = c.expires_at <= now
        update = sa.update(_COUNTERS).where(c.key == row_key).values(
            count=sa.case((expired, amount), else_=c.count + amount),
            expires_at=sa.case((expired, ends), else_=c.expires_at))
        with self._engine().begin() as conn:
            if conn.execute(update).rowcount == 0:
                # first hit of this key (or of its address for a while): the
                # ended windows of other keys go on the way
                conn.execute(sa.delete(_COUNTERS).where(c.expires_at < now))
                if _insert_if_missing(conn, {"key": row_key, "count": amount,
                                             "expires_at": ends}) == 1:
                    return amount
                conn.execute(update)  # another worker inserted it meanwhile
            return conn.execute(sa.select(c.count).where(c.key == row_key)).scalar_one()

    def get(self, key: str) -> int:
        """The count of ``key`` in its current window (0 when none)."""
        c = _COUNTERS.c
        with self._engine().connect() as conn:
            count = conn.execute(sa.select(c.count).where(
                c.key == _row_key(key), c.expires_at > utcnow())).scalar_one_or_none()
        return count or 0

    def get_expiry(self, key: str) -> float:
        """When ``key``'s window ends (seconds since the epoch; now when none)."""
        c = _COUNTERS.c
        with self._engine().connect() as conn:
            ends = conn.execute(sa.select(c.expires_at).where(
                c.key == _row_key(key))).scalar_one_or_none()
        if ends is None:
            return time.time()
        return max(time.time(), ends.replace(tzinfo=UTC).timestamp())

    def check(self) -> bool:
        """True when the dashboard database answers."""
        try:
            with self._engine().connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def reset(self) -> int | None:
        """Forget every count; return how many rows there were."""
        with self._engine().begin() as conn:
            return conn.execute(sa.delete(_COUNTERS)).rowcount

    def clear(self, key: str) -> None:
        """Forget the count of ``key``."""
        with self._engine().begin() as conn:
            conn.execute(sa.delete(_COUNTERS).where(_COUNTERS.c.key == _row_key(key)))


def _audit_breach(limit: RequestLimit) -> None:
    from .services import audit

    audit.record(audit.Actor((request.form.get("username") or "")[:64] or None,
                             request.remote_addr), "login", "throttled",
                 reason="address", limit=str(limit.limit))


def init_app(app: Flask) -> Limiter:
    """Bind a limiter to ``app`` (one per app, so tests never share counts)
    and limit ``POST /login`` per client address to ``LOGIN_RATE_LIMIT``
    (e.g. ``"20 per minute"``). Call after the blueprints are registered.

    :return: the limiter, also in ``app.extensions["limiter"]``.
    """
    limiter = Limiter(get_remote_address, app=app, on_breach=_audit_breach,
                      default_limits=[], in_memory_fallback_enabled=True)
    app.view_functions["auth.login"] = limiter.limit(
        app.config["LOGIN_RATE_LIMIT"], methods=["POST"])(app.view_functions["auth.login"])
    return limiter
