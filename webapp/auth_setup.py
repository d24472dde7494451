"""Authentication wiring: sessions (Flask-Login), bearer tokens for the API,
and one rule for every request: log in first, except ``/login`` (and its
single sign-on steps ``/login/oidc``, ``/login/oidc/callback``), the password
links ``/password/<token>``, ``/healthz``,
``/readyz`` and static files.

A session ends ``SESSION_IDLE_MINUTES`` after its last request and
``SESSION_MAX_HOURS`` after its login (:func:`session_is_current`), checked
on the server from stamps in the signed session; a remember cookie carries
no stamps, so it logs nobody in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps

from flask import Flask, abort, current_app, g, jsonify, redirect, request, session, url_for
from flask_login import current_user, user_logged_in

from .extensions import login_manager
from .models import User
from .services import accounts

# the single sign-on start and callback are steps of logging in, like /login
# a password link (invitation or reset) is how an account gets its first password
PUBLIC_ENDPOINTS = {"auth.login", "auth.password_link", "sso.start", "sso.callback",
                    "main.healthz", "readiness.readyz", "static"}
# GET downloads a pipeline fetches with its token, like the API
TOKEN_ENDPOINTS = {"authoring.pending_sql", "authoring.range_sql"}


def _is_api() -> bool:
    """True for requests that accept a bearer token: the API, and the SQL
    downloads (GET) of :data:`TOKEN_ENDPOINTS`."""
    return request.path.startswith("/api/") or (
        request.method == "GET" and request.endpoint in TOKEN_ENDPOINTS)


def bearer_token() -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


LOGIN_AT, SEEN_AT = "_login_at", "_seen_at"  # session keys: seconds since the epoch


def _stamp_login(_app, user=None, **_extra) -> None:
    """At every login (password or single sign-on): the session's start."""
    now = time.time()
    session[LOGIN_AT] = session[SEEN_AT] = now


def session_is_current(stamps, now: float, idle_minutes: float, max_hours: float) -> bool:
    """True when a session with ``stamps`` (the session, or any mapping with
    :data:`LOGIN_AT` and :data:`SEEN_AT` in seconds since the epoch) may go
    on at ``now``: used within ``idle_minutes`` and logged in less than
    ``max_hours`` ago. No stamps (a remember cookie, a session from before
    the limits) is not current."""
    login_at, seen_at = stamps.get(LOGIN_AT), stamps.get(SEEN_AT)
    if not all(isinstance(v, int | float) for v in (login_at, seen_at)):
        return False
    return now - seen_at <= idle_minutes * 60 and now - login_at <= max_hours * 3600


def _touch(now: float, idle_minutes: float) -> None:
    """Refresh the session's last-seen stamp, but only when it is older than
    a tenth of the idle limit (at most a minute): most responses then leave
    the session cookie alone. A response that sets the cookie can land after
    a later one (an htmx fragment still loading when the user logs out) and
    put the older session back in the browser."""
    if now - session[SEEN_AT] >= min(60.0, idle_minutes * 6):
        session[SEEN_AT] = now


def _template_helpers() -> dict:
    """Template helpers: ``can(target, role)`` and ``can_any(role)`` (see
    each one's docstring)."""
    def can(target, role: str) -> bool:
        """Template helper: the logged-in user's role on ``target`` is
        ``role`` or above (buttons follow it; the server checks again)."""
        from .core.permissions import Role

        return current_user.is_authenticated and \
            accounts.role_on(current_user, target) >= Role.parse(role)
    def can_any(role: str) -> bool:
        """Template helper: ``role`` or above on at least one target."""
        from .services.catalog import get_catalog

        return any(can(t, role) for t in get_catalog().targets.values())
    return {"can": can, "can_any": can_any}


def init_app(app: Flask) -> None:
    """Register the user loaders and the login-required rule on ``app``."""
    login_manager.session_protection = "strong"
    user_logged_in.connect(_stamp_login, app)

    @login_manager.user_loader
    def load_user(session_id: str) -> User | None:
        if _is_api() and bearer_token():
            return None  # a bearer header means token auth only (request_loader)
        config, now = current_app.config, time.time()
        if not session_is_current(session, now, config["SESSION_IDLE_MINUTES"],
                                  config["SESSION_MAX_HOURS"]):
            # too long unused or too old (or a remember cookie, which has no
            # stamps): the session ends here, so the same cookie fails again
            session.clear()
            g.pop("csrf_token", None)  # belonged to the ended session
            session["_remember"] = "clear"  # Flask-Login deletes a remember cookie
            return None
        _touch(now, config["SESSION_IDLE_MINUTES"])
        # "<id>:<session_version>": a logout, password/role change or disable
        # bumps the version, so every older cookie stops working
        return accounts.user_for_session(session_id)

    @login_manager.request_loader
    def load_user_from_token(req) -> User | None:
        if not _is_api():
            return None  # bearer tokens are for the API (and its downloads) only
        token = bearer_token()
        user = accounts.user_for_token(token) if token else None
        g.authenticated_by_token = user is not None
        return user

    @login_manager.unauthorized_handler
    def unauthorized():
        # a download fetched by a browser (no bearer header) goes to the login
        # page like any page; a pipeline (or the API) gets a JSON 401
        if request.path.startswith("/api/") or (_is_api() and bearer_token()):
            response = jsonify(error="authentication required",
                               detail="send Authorization: Bearer <token> or log in")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Bearer realm="alembic-dashboard"'
            return response
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))

    app.context_processor(_template_helpers)

    @app.before_request
    def require_login():
        if request.endpoint in PUBLIC_ENDPOINTS:
            return None
        if request.endpoint is None:
            return None  # 404 / 405: the error handler answers, without details
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        return None


def authenticated_by_token() -> bool:
    """True when this request's user was authenticated by a valid bearer token
    (not by a session cookie): only then may CSRF be skipped. A request with
    an ``Authorization: Bearer`` header is authenticated by it alone, so an
    invalid token is a 401 even with a session cookie."""
    _ = current_user.is_authenticated  # make Flask-Login load the user now
    return bool(g.get("authenticated_by_token"))


def require_role(role: str) -> Callable:
    """View decorator: 403 unless the logged-in user has ``role`` or above."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated or not current_user.has_role(role):
                from .services import audit

                audit.record(audit.Actor(getattr(current_user, "username", None),
                                         request.remote_addr), "access", "denied",
                             reason="role", needed=role, path=request.path[:200])
                abort(403, description=f"This page needs the {role} role.")
            return view(*args, **kwargs)
        return wrapper
    return decorator
