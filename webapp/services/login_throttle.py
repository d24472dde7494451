"""Per-username login lockout, correct across processes and hosts.

Each attempt first *reserves* a slot with one atomic ``UPDATE`` on the
``login_failures`` row of the submitted username, known or not, so the
answer never tells whether an account exists: the row's ``failures`` grows
only while it is below :data:`MAX_FAILED_LOGINS` (or the last failure is
older than :data:`LOCKOUT`, which starts a new count). The database
serialises concurrent UPDATEs of one row, so of N parallel wrong passwords
at most :data:`MAX_FAILED_LOGINS` are ever checked. A successful login
clears the row. The per-address limit is Flask-Limiter's
(:mod:`webapp.ratelimit`).
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models import LoginFailure, utcnow

MAX_FAILED_LOGINS = 5  # then the username waits LOCKOUT before the next try
LOCKOUT = timedelta(minutes=5)


class LoginThrottled(Exception):
    """Too many failed logins for this username; ``retry_after`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; try again in {retry_after} s")


def _insert_missing_row(key: str) -> None:
    """INSERT the row of ``key`` unless it exists (atomic on every dialect)."""
    values = {"username": key, "failures": 0, "last_failed_at": utcnow()}
    dialect = db.session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
        stmt = insert(LoginFailure).values(values).on_conflict_do_nothing()
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
        stmt = insert(LoginFailure).values(values).on_conflict_do_nothing()
    else:  # mysql, mariadb
        stmt = sa.insert(LoginFailure).values(values).prefix_with("IGNORE")
    db.session.execute(stmt)


def reserve_attempt(username: str) -> None:
    """Count one login attempt for ``username`` before its password is checked.

    Commits. Rows of expired lockouts are pruned on the way.

    :raises LoginThrottled: the username had :data:`MAX_FAILED_LOGINS`
        failures within :data:`LOCKOUT` of each other; ``retry_after`` in s.
    """
    key = username[:64]
    table = LoginFailure.__table__
    for _ in range(3):
        now = utcnow()
        cutoff = now - LOCKOUT
        db.session.execute(sa.delete(table).where(table.c.last_failed_at < cutoff,
                                                  table.c.username != key))
        _insert_missing_row(key)
        result = db.session.execute(
            sa.update(table)
            .where(table.c.username == key,
                   sa.or_(table.c.failures < MAX_FAILED_LOGINS, table.c.last_failed_at < cutoff))
            .values(failures=sa.case((table.c.last_failed_at < cutoff, 1),
                                     else_=table.c.failures + 1),
                    last_failed_at=now))
        db.session.commit()
        if result.rowcount == 1:
            return
        row = db.session.execute(sa.select(table.c.failures, table.c.last_failed_at)
                                 .where(table.c.username == key)).one_or_none()
        if row is not None and row.failures >= MAX_FAILED_LOGINS and \
                row.last_failed_at >= cutoff:
            remaining = LOCKOUT - (now - row.last_failed_at)
            raise LoginThrottled(max(1, int(remaining.total_seconds()) + 1))
        # the row was pruned by another process between our statements: again
    raise LoginThrottled(int(LOCKOUT.total_seconds()))


def clear(username: str) -> None:
    """Forget the failures of ``username`` (after a successful login). Commits."""
    db.session.execute(sa.delete(LoginFailure.__table__).where(
        LoginFailure.__table__.c.username == username[:64]))
    db.session.commit()
