"""Single sign-on pages: ``GET /login/oidc`` (to the identity provider) and
``GET /login/oidc/callback`` (back from it; public, like ``/login``)."""

from __future__ import annotations

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import login_user

from ..services import audit, sso
from .auth import LoginForm
from .common import safe_next

bp = Blueprint("sso", __name__)

NEXT_KEY = "sso_next"


@bp.route("/login/oidc")
def start():
    """Redirect to the identity provider's authorization endpoint (code flow,
    PKCE S256, state and nonce kept in the session by Authlib)."""
    if not sso.enabled():
        abort(404)
    import requests  # the SSO libraries load only when SSO is configured and used

    session[NEXT_KEY] = safe_next(request.args.get("next"))
    try:
        return sso.client().authorize_redirect(url_for("sso.callback", _external=True))
    except (requests.RequestException, ValueError, RuntimeError) as exc:
        return _failed("provider_unreachable", f"{type(exc).__name__}: {exc}", 502,
                       "The identity provider cannot be reached. Try again later.")


def _failed(reason: str, detail: str, status: int, message: str):
    audit.record(audit.Actor(None, request.remote_addr), "login", "failed", method="oidc",
                 reason=reason, detail=detail[:300])
    flash(message, "error")
    return render_template("auth/login.html", form=LoginForm()), status


@bp.route("/login/oidc/callback")
def callback():
    """Finish the login: Authlib checks the state, exchanges the code (with the
    PKCE verifier) and verifies the ID token (JWKS signature, issuer, audience,
    expiry, nonce); then the account is created or updated and logged in."""
    if not sso.enabled():
        abort(404)
    import requests  # the SSO libraries load only when SSO is configured and used
    from authlib.integrations.base_client import OAuthError
    from joserfc.errors import JoseError

    client = sso.client()
    try:
        token = client.authorize_access_token()
    except OAuthError as exc:  # state missing/unknown/replayed, error from the provider
        return _failed(exc.error or "oauth_error", str(exc), 400,
                       "Single sign-on failed: the login could not be verified. "
                       "Start again from the login page.")
    except JoseError as exc:  # signature, audience, issuer, expiry, nonce
        return _failed("id_token_invalid", f"{type(exc).__name__}: {exc}", 401,
                       "Single sign-on failed: the identity provider's ID token was refused.")
    except (requests.RequestException, ValueError) as exc:
        return _failed("provider_unreachable", f"{type(exc).__name__}: {exc}", 502,
                       "The identity provider cannot be reached. Try again later.")
    claims = token.get("userinfo")
    if not claims:  # no ID token in the answer: nothing was verified
        return _failed("no_id_token", "token response without id_token", 401,
                       "Single sign-on failed: the identity provider sent no ID token.")
    claims = dict(claims)
    metadata = client.load_server_metadata()
    if current_app.config["OIDC_ROLES_CLAIM"] not in claims and metadata.get("userinfo_endpoint"):
        # providers that keep groups out of the ID token serve them at userinfo
        try:
            extra = client.userinfo(token=token)
        except (OAuthError, requests.RequestException, ValueError) as exc:
            return _failed("userinfo_failed", f"{type(exc).__name__}: {exc}", 502,
                           "The identity provider's userinfo endpoint failed. Try again.")
        if extra.get("sub") == claims.get("sub"):  # OIDC Core 5.3.2: same subject or ignore
            claims = {**extra, **claims}
    issuer = metadata.get("issuer") or current_app.config["OIDC_ISSUER"]
    try:
        user, created = sso.account_for(issuer, claims)
    except sso.SsoRefused as exc:
        audit.record(audit.Actor(None, request.remote_addr, issuer, str(claims.get("sub"))),
                     "login", "denied", method="oidc", reason="account", detail=str(exc))
        flash(str(exc), "error")
        return render_template("auth/login.html", form=LoginForm()), 403
    next_url = session.pop(NEXT_KEY, None)
    login_user(user)
    audit.record(audit.Actor.of(user, request.remote_addr), "login", "ok", method="oidc",
                 groups=user.groups, role=user.role, created=created)
    return redirect(safe_next(next_url))
