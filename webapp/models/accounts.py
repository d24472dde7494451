"""Accounts: users (local or from single sign-on), API tokens, login throttling."""

from __future__ import annotations

import hashlib
from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .clock import utcnow

# "none": only what per-target grants give (see webapp.core.permissions)
ROLES = ("none", "viewer", "operator", "approver", "admin")


class User(UserMixin, db.Model):
    """An account. ``role`` is one of :data:`ROLES` (ordered by power), the
    global role; ``groups`` is a JSON list of group names (per-target grants
    ``group:<name>``), set by ``flask set-groups`` or from the identity
    provider's claim at each single sign-on. ``oidc_issuer``/``oidc_subject``
    identify an account made by single sign-on (its ``password_hash`` is empty).

    ``is_service``: a service account (for pipelines): no password, never logs
    in, acts through its API tokens only. ``password_link_hash`` is the
    SHA-256 of the one open password link (an invitation or a reset, see
    :mod:`webapp.services.password_links`), valid until
    ``password_link_expires_at`` (UTC); both are None when there is none.
    ``email``: the address notification mails go to (set by an admin on the
    users page or the invitation form), None for no mail.

    ``token_ceiling`` is not stored: the role ceiling of the API token this
    request was authenticated by (None for a session), set by
    :func:`webapp.services.accounts.user_for_token` and applied by
    :meth:`has_role` and :func:`webapp.services.accounts.access_on`.
    """

    __tablename__ = "users"
    __table_args__ = (db.UniqueConstraint("oidc_issuer", "oidc_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    is_active_flag: Mapped[bool] = mapped_column("is_active", default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # bumped on logout, password change, role change and disable: every
    # session cookie carrying an older value stops working (see get_id)
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    groups_json: Mapped[str | None] = mapped_column("groups", Text, default="[]")  # None = []
    oidc_issuer: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))
    is_service: Mapped[bool] = mapped_column(default=False, server_default=false())
    password_link_hash: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    password_link_expires_at: Mapped[datetime | None]
    # where notification mails go (webapp.services.mail); None: no mail
    email: Mapped[str | None] = mapped_column(String(254))

    token_ceiling = None  # str | None, per request, never stored (see above)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user",
                                                  cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # Flask-Login: inactive users cannot log in
        return self.is_active_flag

    def get_id(self) -> str:
        """Flask-Login's session id: ``"<id>:<session_version>"``, so a bumped
        version logs every existing session out."""
        return f"{self.id}:{self.session_version}"

    def has_role(self, minimum: str) -> bool:
        """True when this user's role is ``minimum`` or above.

        Order: viewer < operator < approver < admin. A request authenticated
        by a token with a role ceiling is held to it (:attr:`token_ceiling`).
        """
        role = ROLES.index(self.role)
        if self.token_ceiling is not None:
            role = min(role, ROLES.index(self.token_ceiling))
        return role >= ROLES.index(minimum)

    @property
    def groups(self) -> list[str]:
        """The group names stored for this account (``groups`` decoded)."""
        import json

        value = json.loads(self.groups_json or "[]")
        return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []


class ApiToken(db.Model):
    """A bearer token for the API. Only its SHA-256 is stored; ``prefix`` (the
    first 8 characters) helps a person tell tokens apart. ``expires_at``
    (UTC; None: never, tokens made before expiry existed) ends it;
    ``role_ceiling`` (a role of :data:`ROLES`, None: none) caps what its
    requests may do below the owner's own role on every target."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    role_ceiling: Mapped[str | None] = mapped_column(String(16))

    user: Mapped[User] = relationship(back_populates="tokens")

    @staticmethod
    def hash_token(token: str) -> str:
        """SHA-256 hex digest of a token (tokens are random, 256 bits: no salt needed)."""
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LoginFailure(db.Model):
    """Failed logins per submitted username (known or not, so the lockout
    answers alike for both); updated with single atomic UPDATEs."""

    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failed_at: Mapped[datetime] = mapped_column(index=True)


class RateLimitCounter(db.Model):
    """Flask-Limiter's fixed-window counters when there is no Redis
    (:class:`webapp.ratelimit.DashboardDatabaseStorage`): one row per limit
    and client address, so every gunicorn worker and host counts together.
    ``key`` is the SHA-256 (hex) of the limiter's key; ``expires_at`` (UTC)
    ends the window."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(default=0, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(index=True)
