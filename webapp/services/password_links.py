"""Password links: how a person gets a password without an admin ever
knowing it. An admin *invites* a new account or *resets* an existing one's
password; either gives one link (a random 256-bit token, of which only the
SHA-256 is stored on the account) that the person opens to choose a
password. A link works once, for :data:`LINK_LIFETIME`; a newer link
replaces the older one.

A reset ends the old password at once (and every session): a reset is what
an admin does when a password may be known to someone else.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from ..extensions import db
from ..models import ApiToken, User, utcnow
from . import accounts, login_throttle
from .refusals import Reason

LINK_HOURS = 72
LINK_LIFETIME = timedelta(hours=LINK_HOURS)
INVALID_LINK = ("This link does not work: it was used, it expired or a newer one "
                "replaced it. Ask an admin for a new one.")


def _issue(user: User) -> str:
    """A new link token for ``user`` (replacing any open one; commits)."""
    token = secrets.token_urlsafe(32)
    user.password_link_hash = ApiToken.hash_token(token)
    user.password_link_expires_at = utcnow() + LINK_LIFETIME
    db.session.commit()
    return token


def invite(username: str, role: str, email: str | None = None) -> tuple[User, str]:
    """Create the account ``username`` with the global ``role``, no
    password and the notification address ``email`` (or None), and a link
    to choose a password.

    :return: the account and the link's token (shown to the admin once).
    :raises AccountError: invalid or taken username, unknown role.
    """
    user = accounts.create_user(username, role, None, email=email)
    return user, _issue(user)


def reset(user: User) -> str:
    """End ``user``'s password and sessions now, and give a link to choose a
    new one (also how an admin sends an invitation again).

    :return: the link's token (shown to the admin once).
    :raises AccountError: a service account (it has no password), an account
        of single sign-on only, or a disabled one.
    """
    if user.is_service:
        raise accounts.AccountError(f"{user.username} is a service account: it has no "
                                    "password, only API tokens")
    if user.oidc_subject and not user.password_hash:
        raise accounts.AccountError(f"{user.username} signs in with single sign-on only: "
                                    "its password is the identity provider's")
    if not user.is_active:
        raise accounts.AccountError(f"{user.username} is disabled: enable the account first")
    user.password_hash = ""
    token = _issue(user)
    accounts.end_sessions(user)
    return token


def user_for_link(token: str) -> User | None:
    """The active account whose open, unexpired link is ``token``, or None."""
    if not token or len(token) > 200:
        return None
    user = db.session.execute(db.select(User).filter_by(
        password_link_hash=ApiToken.hash_token(token))).scalar_one_or_none()
    if user is None or not user.is_active or user.password_link_expires_at is None \
            or user.password_link_expires_at <= utcnow():
        return None
    return user


def use_link(token: str, password: str) -> User:
    """Set the password of the link's account (policy checked), close the
    link, end the account's sessions and clear its failed logins (commits).

    :raises AccountError: :attr:`Reason.NOT_FOUND` for a link that does not
        work (:data:`INVALID_LINK`); a password the policy refuses (nothing
        changes then: the link still works).
    """
    user = user_for_link(token)
    if user is None:
        raise accounts.AccountError(INVALID_LINK, Reason.NOT_FOUND)
    accounts.check_password_policy(password, user.username)
    user.password_hash = accounts.hash_password(password)
    user.password_link_hash = user.password_link_expires_at = None
    db.session.commit()
    accounts.end_sessions(user)
    login_throttle.clear(user.username)
    return user
