"""The dashboard's own tables (users, API tokens).

The schema is migrated by Alembic from ``migrations/`` (never ``create_all``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

ROLES = ("viewer", "operator", "approver", "admin")


def utcnow() -> datetime:
    """Current time in UTC, timezone-naive (stored as UTC in every dialect)."""
    return datetime.now(UTC).replace(tzinfo=None)


class User(UserMixin, db.Model):
    """A local account. ``role`` is one of :data:`ROLES` (ordered by power)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    is_active_flag: Mapped[bool] = mapped_column("is_active", default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    failed_login_count: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failed_login_at: Mapped[datetime | None]

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user",
                                                  cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # Flask-Login: inactive users cannot log in
        return self.is_active_flag

    def has_role(self, minimum: str) -> bool:
        """True when this user's role is ``minimum`` or above.

        Order: viewer < operator < approver < admin.
        """
        return ROLES.index(self.role) >= ROLES.index(minimum)


class ApiToken(db.Model):
    """A bearer token for the API. Only its SHA-256 is stored; ``prefix`` (the
    first 8 characters) helps a person tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")

    @staticmethod
    def hash_token(token: str) -> str:
        """SHA-256 hex digest of a token (tokens are random, 256 bits: no salt needed)."""
        return hashlib.sha256(token.encode("utf-8")).hexdigest()
