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
from .refusals import Reason, Refused

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
# a token lives 1 to MAX_TOKEN_DAYS days (DEFAULT_TOKEN_DAYS unless asked)
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 365
# what a token's role ceiling may be (a ceiling of "none" would be no token)
CEILINGS = tuple(r for r in ROLES if r != "none")

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


class AccountError(Refused, ValueError):
    """Invalid account input (bad username, role or password); message says
    which. A :class:`~webapp.services.refusals.Refused` (``reason``, by
    default :attr:`Reason.BAD_INPUT`: a 400), so a page or the API answers
    it like any refusal; the CLI prints its message."""

    def __init__(self, message: str, reason: Reason = Reason.BAD_INPUT) -> None:
        super().__init__(reason, message)


def check_password_policy(password: str, username: str | None = None) -> None:
    """:raises AccountError: the password is too short, common or trivial
    (:func:`webapp.services.passwords.password_problem`)."""
    problem = passwords.password_problem(password or "", username)
    if problem:
        raise AccountError(problem)


def _check_new_account(username: str, role: str) -> None:
    """:raises AccountError: invalid or taken username, unknown role."""
    if not USERNAME_RE.match(username or ""):
        raise AccountError("username: 1-64 letters, digits or . _ @ -, "
                           "starting with a letter or digit")
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if db.session.execute(db.select(User).filter_by(username=username)).scalar_one_or_none():
        raise AccountError(f"user {username!r} already exists")


def create_user(username: str, role: str, password: str | None, *,
                is_service: bool = False, email: str | None = None) -> User:
    """Create and commit a user.

    :param password: the password (checked by :func:`check_password_policy`),
        or None for an account without one yet: a service account
        (``is_service``, which only ever acts through API tokens) or a person
        who sets it through an invitation link
        (:func:`webapp.services.password_links.invite`).
    :param email: the address notification mails go to (already checked,
        e.g. by the web layer's input schema), or None.
    :raises AccountError: invalid or taken username, unknown role, password
        refused by the policy, or a password given to a service account.
    """
    _check_new_account(username, role)
    if is_service and password is not None:
        raise AccountError("a service account has no password: it uses API tokens")
    if password is not None:
        check_password_policy(password, username)
    user = User(username=username, role=role, is_service=is_service, email=email or None,
                password_hash=hash_password(password) if password is not None else "")
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


def set_email(user: User, email: str | None) -> None:
    """Set (or, with None, clear) the address ``user``'s notification mails
    go to, and commit. ``email`` is already checked (the web layer's input
    schema); sessions stay."""
    user.email = email or None
    db.session.commit()


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


def create_token(user: User, name: str, *, expires_days: int | None = DEFAULT_TOKEN_DAYS,
                 ceiling: str | None = None) -> str:
    """:func:`issue_token`'s plaintext token (shown only once)."""
    return issue_token(user, name, expires_days=expires_days, ceiling=ceiling)[1]


def issue_token(user: User, name: str, *, expires_days: int | None = DEFAULT_TOKEN_DAYS,
                ceiling: str | None = None) -> tuple[ApiToken, str]:
    """Create an API token for ``user`` (commits).

    :param name: what the token is for (1-100 characters).
    :param expires_days: it stops working this many days (1 to
        :data:`MAX_TOKEN_DAYS`) from now.
    :param ceiling: a role of :data:`CEILINGS` its requests never exceed,
        whatever ``user`` may do (None: the user's own roles).
    :return: the stored row and the plaintext token, which is shown only once.
    :raises AccountError: empty or over-long name, days out of range, not a
        role, or ``user`` is disabled.
    """
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise AccountError("token name must have 1-100 characters")
    if expires_days is None or not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise AccountError(f"a token expires after 1 to {MAX_TOKEN_DAYS} days")
    if ceiling is not None and ceiling not in CEILINGS:
        raise AccountError(f"role ceiling must be one of {', '.join(CEILINGS)} (or none)")
    if not user.is_active:
        raise AccountError(f"{user.username} is disabled: enable the account first")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, name=name, prefix=token[:12],
                   token_hash=ApiToken.hash_token(token), role_ceiling=ceiling,
                   expires_at=utcnow() + timedelta(days=expires_days))
    db.session.add(row)
    db.session.commit()
    return row, token


def user_for_token(token: str) -> User | None:
    """The active user owning a token that is neither revoked nor expired,
    or None. The user carries the token's role ceiling for this request
    (:attr:`User.token_ceiling`). Records last use (``last_used_at``, UTC)
    when the recorded one is older than :data:`LAST_USED_RESOLUTION`."""
    if not token or len(token) > 200:
        return None
    row = db.session.execute(
        db.select(ApiToken).filter_by(token_hash=ApiToken.hash_token(token))
    ).scalar_one_or_none()
    now = utcnow()
    if row is None or row.revoked_at is not None or not row.user.is_active \
            or (row.expires_at is not None and row.expires_at <= now):
        return None
    row.user.token_ceiling = row.role_ceiling
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
    target no longer configured (None) only the global role counts. A request
    made with a token that has a role ceiling (:attr:`User.token_ceiling`)
    gets at most that role, from each source.
    """
    global_role = Role.parse(user.role)
    if target is None:
        sources = ((global_role, "global role"),) \
            if global_role > Role.NONE else ()
        access = Access(global_role, sources)
    else:
        access = effective_access(global_role, user.username, user.groups,
                                  target_name=target.name,
                                  target_grants=target.policy.grants,
                                  tier=target.tier, tier_grants=target.tier_grants)
    if user.token_ceiling is None:
        return access
    ceiling = Role.parse(user.token_ceiling)
    return Access(min(access.role, ceiling),
                  tuple((min(role, ceiling), f"{why}, token ceiling {ceiling.label}")
                        for role, why in access.sources))


def grants_of(user: User, targets: Iterable[Target]) -> list[tuple[Target, Access]]:
    """The targets (in order) on which ``user`` holds a per-target or
    per-tier grant from the targets file, with the access it gives there
    (what the admin page lists next to the global role)."""
    found = []
    for target in targets:
        access = access_on(user, target)
        if any(why != "global role" for _, why in access.sources):
            found.append((target, access))
    return found


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
