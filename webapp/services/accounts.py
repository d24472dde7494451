"""Accounts: local users with hashed passwords, roles, groups, API tokens,
login throttling, and :func:`role_on` — the one answer to "what may this
user do on this target" (global role plus per-target and per-tier grants).

Passwords are hashed with werkzeug's scrypt; tokens are random 256-bit
strings of which only the SHA-256 is stored.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from datetime import timedelta

from flask import current_app, has_app_context
from werkzeug.security import check_password_hash, generate_password_hash

from ..core.permissions import Access, Role, effective_access
from ..core.targets import Target
from ..extensions import db
from ..models import ROLES, ApiToken, User, utcnow
from . import audit, login_throttle, passwords

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD_LENGTH = passwords.MIN_LENGTH
MAX_FAILED_LOGINS = login_throttle.MAX_FAILED_LOGINS
LOCKOUT = login_throttle.LOCKOUT
LoginThrottled = login_throttle.LoginThrottled
GROUP_RE = re.compile(r"^[^\s,]{1,128}$")
MAX_GROUPS = 200
TOKEN_PREFIX = "adb_"
# a token's "last used" is written at most this often (the admin page shows
# minutes), so a pipeline polling the API does not write on every call
LAST_USED_RESOLUTION = timedelta(minutes=1)

# werkzeug's default: scrypt with N=2**15, r=8, p=1 (about 0.1 s a hash)
PASSWORD_HASH_METHOD = "scrypt"
_dummy_hashes: dict[str, str] = {}  # method -> a hash of no real password


def _hash_method() -> str:
    """The app's ``PASSWORD_HASH_METHOD`` (werkzeug's method string; the
    test suite sets a cheaper scrypt cost), else :data:`PASSWORD_HASH_METHOD`."""
    if not has_app_context():
        return PASSWORD_HASH_METHOD
    return current_app.config.get("PASSWORD_HASH_METHOD") or PASSWORD_HASH_METHOD


def hash_password(password: str) -> str:
    """``password`` hashed for storage (werkzeug, :func:`_hash_method`)."""
    return generate_password_hash(password, method=_hash_method())


def _dummy_password_hash() -> str:
    """Checked against when the user does not exist, so both paths take as
    long (made on first use, one per hash method: job processes never need
    it)."""
    method = _hash_method()
    if method not in _dummy_hashes:
        _dummy_hashes[method] = generate_password_hash("not-a-real-password", method=method)
    return _dummy_hashes[method]


class AccountError(ValueError):
    """Invalid account input (bad username, role or password); message says which."""


def check_password_policy(password: str, username: str | None = None) -> None:
    """:raises AccountError: the password is too short, common or trivial
    (:func:`webapp.services.passwords.password_problem`)."""
    problem = passwords.password_problem(password or "", username)
    if problem:
        raise AccountError(problem)


def create_user(username: str, role: str, password: str) -> User:
    """Create and commit a user.

    :raises AccountError: invalid or taken username, unknown role, password
        refused by the policy (:func:`check_password_policy`).
    """
    if not USERNAME_RE.match(username or ""):
        raise AccountError("username: 1-64 letters, digits or . _ @ -, "
                           "starting with a letter or digit")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    check_password_policy(password, username)
    if db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none():
        raise AccountError(f"user {username!r} already exists")
    user = User(username=username, role=role, password_hash=hash_password(password))
    db.session.add(user)
    db.session.commit()
    return user


def authenticate(username: str, password: str) -> User | None:
    """Check a username and password.

    Every attempt, for known and unknown usernames alike, first reserves a
    slot in :mod:`webapp.services.login_throttle` (atomic across processes).

    :return: the user on success (failures cleared), else None.
    :raises LoginThrottled: the username had too many recent failures.
    """
    login_throttle.reserve_attempt(username)
    user = db.session.execute(
        db.select(User).filter_by(username=username)).scalar_one_or_none()
    if user is None or not user.password_hash:  # unknown, or single sign-on only
        check_password_hash(_dummy_password_hash(), password)
        return None
    if not check_password_hash(user.password_hash, password) or not user.is_active:
        return None
    login_throttle.clear(username)
    user.last_login_at = utcnow()
    db.session.commit()
    return user


def end_sessions(user: User) -> None:
    """Invalidate every session of ``user`` (logout everywhere): one atomic
    ``session_version + 1``. Commits."""
    db.session.execute(db.update(User).where(User.id == user.id)
                       .values(session_version=User.session_version + 1))
    db.session.commit()
    db.session.refresh(user)


def set_password(user: User, password: str) -> None:
    """Set a new password (policy checked) and end the user's sessions.

    :raises AccountError: refused by :func:`check_password_policy`.
    """
    check_password_policy(password, user.username)
    user.password_hash = hash_password(password)
    db.session.commit()
    end_sessions(user)


def _check_keeps_an_admin(user: User) -> None:
    """:raises AccountError: ``user`` is the last active admin."""
    if user.role == "admin" and user.is_active and db.session.execute(
            db.select(db.func.count(User.id)).where(User.role == "admin",
                                                    User.is_active_flag.is_(True))
    ).scalar_one() <= 1:
        raise AccountError(f"{user.username} is the last active admin")


def set_role(user: User, role: str) -> None:
    """Change the role and end the user's sessions.

    :raises AccountError: unknown role, or the last active admin demoted.
    """
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if role != "admin":
        _check_keeps_an_admin(user)
    user.role = role
    db.session.commit()
    end_sessions(user)


def set_active(user: User, active: bool) -> None:
    """Disable (or enable again) an account; disabling ends its sessions and
    stops its tokens from working (they are checked against ``is_active``).

    :raises AccountError: disabling the last active admin.
    """
    if not active:
        _check_keeps_an_admin(user)
    user.is_active_flag = active
    db.session.commit()
    end_sessions(user)


def user_for_session(session_id: str) -> User | None:
    """The active user of a Flask-Login session id ``"<id>:<session_version>"``
    (:meth:`User.get_id`), or None when malformed, unknown, disabled or of an
    older session version."""
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not version.isdigit() or len(user_id) > 18:
        return None
    user = db.session.get(User, int(user_id))
    if user is None or not user.is_active or user.session_version != int(version):
        return None
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
    """The active user owning a (non-revoked) token, or None. Records last
    use (``last_used_at``, UTC) when the recorded one is older than
    :data:`LAST_USED_RESOLUTION`."""
    if not token or len(token) > 200:
        return None
    row = db.session.execute(
        db.select(ApiToken).filter_by(token_hash=ApiToken.hash_token(token))
    ).scalar_one_or_none()
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        db.session.commit()
    return row.user


def revoke_token(token_id: int) -> ApiToken | None:
    """Revoke a token by id (it stops working at once); None if unknown.
    Revoking twice keeps the first time. Commits."""
    row = db.session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        db.session.commit()
    return row


def list_users() -> list[User]:
    """Every account, by username, with its tokens loaded."""
    from sqlalchemy.orm import selectinload

    return list(db.session.execute(db.select(User).options(selectinload(User.tokens))
                                   .order_by(User.username)).scalars())


def get_user(username: str) -> User | None:
    """The user called ``username``, or None."""
    return db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none()


def user_count() -> int:
    """Number of accounts."""
    return db.session.execute(db.select(db.func.count(User.id))).scalar_one()


def clean_groups(groups: Iterable[object]) -> list[str]:
    """Group names kept for an account: strings without spaces or commas,
    1-128 characters, at most :data:`MAX_GROUPS`, sorted, no duplicates."""
    return sorted({g for g in groups if isinstance(g, str) and GROUP_RE.match(g)})[:MAX_GROUPS]


def set_groups(user: User, groups: Iterable[str]) -> list[str]:
    """Store ``user``'s groups (commits); return them as stored.

    :raises AccountError: a name with spaces or commas, or too long.
    """
    groups = [g.strip() for g in groups if g.strip()]
    bad = [g for g in groups if not GROUP_RE.match(g)]
    if bad:
        raise AccountError(f"group names have 1-128 characters, no spaces or commas "
                           f"(got {bad[0][:40]!r})")
    kept = clean_groups(groups)
    user.groups_json = json.dumps(kept)
    db.session.commit()
    return kept


def access_on(user: User, target: Target | None) -> Access:
    """``user``'s effective role on ``target`` and the grants behind it.

    The global role (``users.role``), raised by the target's
    ``[targets.NAME.policy]`` lists and its tier's ``[tiers.TIER.policy]``
    lists that name ``user:<username>`` or one of the user's groups. For a
    target no longer configured (None) only the global role counts.
    """
    global_role = Role.parse(user.role)
    if target is None:
        sources = ((global_role, "global role"),) \
            if global_role > Role.NONE else ()
        return Access(global_role, sources)
    return effective_access(global_role, user.username, user.groups,
                            target_name=target.name, target_grants=target.policy.grants,
                            tier=target.tier, tier_grants=target.tier_grants)


def role_on(user: User, target: Target | None) -> Role:
    """``user``'s effective role on ``target`` (see :func:`access_on`)."""
    return access_on(user, target).role


def hidden_from(user: User, target: Target | None, actor: audit.Actor, **details) -> bool:
    """True when ``user`` may not see ``target`` (below the viewer role there,
    or a target no longer configured and no global role): the denial is then
    audited (action ``access``, with ``details``, e.g. the path). Pages and
    the API answer such a target, or a job or request on it, as one that does
    not exist, so the answer never tells which names exist.
    """
    role = role_on(user, target)
    if role >= Role.VIEWER:
        return False
    audit.record(actor, "access", "denied", target=target.name if target else None,
                 reason="role", needed=Role.VIEWER.label, role=role.label, **details)
    return True


def visible_targets(user: User, targets: Iterable[Target]) -> list[Target]:
    """The targets on which ``user`` has at least the viewer role, in order."""
    return [t for t in targets if role_on(user, t) >= Role.VIEWER]
