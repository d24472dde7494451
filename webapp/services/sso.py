"""Single sign-on with OpenID Connect, through Authlib's Flask client.

Everything that makes a login safe is Authlib's: discovery
(``<issuer>/.well-known/openid-configuration``), the authorization code flow
with PKCE (S256), the ``state`` kept in the session and checked once, the
``nonce``, the ID token's signature (the provider's JWKS), issuer, audience
and expiry. This module only registers the client and turns verified claims
into an account: created on first login, then updated (username, groups,
global role from ``OIDC_ROLES_CLAIM`` through ``OIDC_ROLE_MAP``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from flask import Flask, current_app

from ..core.permissions import Role
from ..extensions import db
from ..models import User
from .accounts import USERNAME_RE, clean_groups, end_sessions

CLIENT_NAME = "oidc"
EXTENSION = "alembic_dashboard_oidc"


class SsoRefused(Exception):
    """Verified claims that cannot become a session (message says why: no
    usable username, username taken by another account, inactive account)."""


def init_app(app: Flask) -> None:
    """Register the OpenID Connect client when ``OIDC_ISSUER`` is set
    (Authlib is imported only then: a dashboard without SSO, its job
    processes and workers never load it)."""
    if not app.config.get("OIDC_ISSUER"):
        return
    from authlib.integrations.flask_client import OAuth

    # one registry per app: Authlib caches the client and the provider's metadata
    oauth = app.extensions[EXTENSION] = OAuth(app)
    oauth.register(
        CLIENT_NAME,
        client_id=app.config["OIDC_CLIENT_ID"],
        client_secret=app.config["OIDC_CLIENT_SECRET"],
        server_metadata_url=app.config["OIDC_ISSUER"] + "/.well-known/openid-configuration",
        client_kwargs={"scope": app.config["OIDC_SCOPES"], "code_challenge_method": "S256",
                       "timeout": 10},
    )


def enabled() -> bool:
    """True when single sign-on is configured for the current app."""
    return bool(current_app.config.get("OIDC_ISSUER"))


def client():
    """The registered Authlib client (``authorize_redirect``, ``authorize_access_token``)."""
    return current_app.extensions[EXTENSION].create_client(CLIENT_NAME)


def claim_values(claims: Mapping, name: str) -> list[str]:
    """The values of claim ``name``: a list of strings, or one string."""
    value = claims.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def role_from_groups(groups: list[str], role_map: Mapping[str, str], default: str) -> Role:
    """The highest role the claim values map to, else ``default``."""
    mapped = [Role.parse(role_map[g]) for g in groups if g in role_map]
    return max(mapped, default=Role.parse(default))


def account_for(issuer: str, claims: Mapping) -> tuple[User, bool]:
    """The account for verified ID token claims, created or updated (commits).

    :param issuer: the issuer the ID token was verified against.
    :param claims: ``sub``, ``preferred_username`` or ``email``, and the
        roles claim (``OIDC_ROLES_CLAIM``).
    When the claim changes an existing account's role or groups, its other
    sessions end (as a role change by an admin does).

    :return: ``(user, created)``.
    :raises SsoRefused: no usable username, the name belongs to another
        account, or the account is deactivated.
    """
    config = current_app.config
    subject = str(claims["sub"])[:255]
    groups = clean_groups(claim_values(claims, config["OIDC_ROLES_CLAIM"]))
    role = role_from_groups(groups, config["OIDC_ROLE_MAP"], config["OIDC_DEFAULT_ROLE"])
    username = next((str(claims[k]) for k in ("preferred_username", "email")
                     if isinstance(claims.get(k), str) and USERNAME_RE.match(claims[k])), None)
    user = db.session.execute(db.select(User).filter_by(
        oidc_issuer=issuer, oidc_subject=subject)).scalar_one_or_none()
    holder = db.session.execute(db.select(User).filter_by(
        username=username)).scalar_one_or_none() if username else None
    created = user is None
    if user is None:
        if username is None:
            raise SsoRefused("The identity provider sent no usable preferred_username or "
                             "email (1-64 letters, digits or . _ @ -).")
        if holder is not None:
            raise SsoRefused(f"The username {username!r} belongs to another account of "
                             "this dashboard; an admin must rename or remove it first.")
        user = User(username=username, password_hash="", oidc_issuer=issuer,
                    oidc_subject=subject, is_active_flag=True)
        db.session.add(user)
    elif username and holder is None:
        user.username = username  # renamed at the identity provider
    if not user.is_active:
        db.session.rollback()
        raise SsoRefused(f"The account {user.username!r} is deactivated.")
    changed = not created and (user.role, user.groups_json) != (role.label, json.dumps(groups))
    user.role, user.groups_json = role.label, json.dumps(groups)
    db.session.commit()
    if changed:  # the provider changed what this person may do: old sessions end
        end_sessions(user)
    return user, created
