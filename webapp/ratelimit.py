"""Per-address limit on login attempts (Flask-Limiter).

The counts live in the storage named by ``RATELIMIT_STORAGE_URI``
(``DASHBOARD_RATELIMIT_STORAGE_URL``, else a ``redis://`` broker URL): with
Redis every gunicorn worker and host shares them. Without Redis the storage
is in-memory, so each worker counts on its own; the per-username lockout
(:mod:`webapp.services.login_throttle`) is in the dashboard database and
exact either way.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address


def _audit_breach(limit: RequestLimit) -> None:
    from .services import audit

    audit.record(audit.Actor((request.form.get("username") or "")[:64] or None,
                             request.remote_addr), "login", "throttled",
                 reason="address", limit=str(limit.limit))


def init_app(app: Flask) -> Limiter:
    """Bind a limiter to ``app`` (one per app, so tests never share counts)
    and limit ``POST /login`` per client address to ``LOGIN_RATE_LIMIT``
    (e.g. ``"20 per minute"``). Call after the blueprints are registered.

    :return: the limiter, also in ``app.extensions["limiter"]``.
    """
    limiter = Limiter(get_remote_address, app=app, on_breach=_audit_breach,
                      default_limits=[], in_memory_fallback_enabled=True)
    app.view_functions["auth.login"] = limiter.limit(
        app.config["LOGIN_RATE_LIMIT"], methods=["POST"])(app.view_functions["auth.login"])
    return limiter
