"""Accounts: local users with hashed passwords, roles, API tokens, login throttling.

Passwords are hashed with werkzeug's scrypt; tokens are random 256-bit
strings of which only the SHA-256 is stored.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

from werkzeug.security import check_password_hash, generate_password_hash

from ..extensions import db
from ..models import ROLES, ApiToken, User, utcnow

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = 8
MAX_FAILED_LOGINS = 5  # then the account waits LOCKOUT before the next try
LOCKOUT = timedelta(minutes=5)
TOKEN_PREFIX = "adb_"

_dummy_hash: str | None = None


def _dummy_password_hash() -> str:
    """Checked against when the user does not exist, so both paths take as
    long (made on first use: scrypt costs ~0.1 s, job processes never need it)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("not-a-real-password")
    return _dummy_hash


class AccountError(ValueError):
    """Invalid account input (bad username, role or password); message says which."""


class LoginThrottled(Exception):
    """Too many failed logins for this username; ``retry_after`` in seconds."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; try again in {retry_after} s")


def create_user(username: str, role: str, password: str) -> User:
    """Create and commit a user.

    :raises AccountError: invalid or taken username, unknown role, password
        shorter than :data:`MIN_PASSWORD_LENGTH`.
    """
    if not USERNAME_RE.match(username or ""):
        raise AccountError("username: 1-64 letters, digits or . _ @ -, "
                           "starting with a letter or digit")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none():
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=generate_password_hash(password))
    db.session.add(user)
    db.session.commit()
    return user


def authenticate(username: str, password: str) -> User | None:
    """Check a username and password.

    :return: the user on success (failure counter reset), else None.
    :raises LoginThrottled: the account had too many recent failures.
    """
    user = db.session.execute(
        db.select(User).filter_by(username=username)).scalar_one_or_none()
    if user is None:
        check_password_hash(_dummy_password_hash(), password)
        return None
    now = utcnow()
    if user.failed_login_count >= MAX_FAILED_LOGINS and user.last_failed_login_at \
            and now - user.last_failed_login_at < LOCKOUT:
        remaining = LOCKOUT - (now - user.last_failed_login_at)
        raise LoginThrottled(int(remaining.total_seconds()) + 1)
    if not user.is_active or not check_password_hash(user.password_hash, password):
        user.failed_login_count = (user.failed_login_count or 0) + 1
        user.last_failed_login_at = now
        db.session.commit()
        return None
    user.failed_login_count = 0
    user.last_login_at = now
    db.session.commit()
    return user


def create_token(user: User, name: str) -> str:
    """Create an API token for ``user``; return the plaintext, shown only once.

    :raises AccountError: empty or over-long name.
    """
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise AccountError("token name must have 1-100 characters")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user=user, name=name, prefix=token[:12],
                            token_hash=ApiToken.hash_token(token)))
    db.session.commit()
    return token


def user_for_token(token: str) -> User | None:
    """The active user owning a (non-revoked) token, or None. Records last use."""
    if not token or len(token) > 200:
        return None
    row = db.session.execute(
        db.select(ApiToken).filter_by(token_hash=ApiToken.hash_token(token))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    row.last_used_at = utcnow()
    db.session.commit()
    return row.user


def get_user(username: str) -> User | None:
    """The user called ``username``, or None."""
    return db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none()


def user_count() -> int:
    """Number of accounts."""
    return db.session.execute(db.select(db.func.count(User.id))).scalar_one()
