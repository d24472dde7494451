"""Readiness (``GET /readyz``) and the answer when the dashboard's own
database is down: 503 "dashboard database unavailable" (HTML for pages,
JSON ``{"error", "detail"}`` for ``/api/``), never a traceback.

``/healthz`` (:mod:`webapp.views.main`) is liveness only and never opens
the database; ``/readyz`` runs ``SELECT 1`` on it. Neither needs a login
nor tells more than ok / unavailable.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, Flask, g, request
from werkzeug.exceptions import InternalServerError

from .extensions import db, login_manager

bp = Blueprint("readiness", __name__)

UNAVAILABLE = "Dashboard database unavailable"
RETRY_AFTER_SECONDS = 30
# what SQLAlchemy raises when a database cannot be reached or used (a
# driver's error: OperationalError, InterfaceError...; a full pool)
DATABASE_ERRORS = (sa.exc.DBAPIError, sa.exc.TimeoutError)


def dashboard_database_ready() -> bool:
    """True when the dashboard's own database answers ``SELECT 1`` (a new or
    pre-pinged pooled connection of the current app's engine)."""
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return False
    return True


@bp.route("/readyz")
def readyz():
    """Readiness for load balancers: 200 ``{"status": "ok"}`` when the
    dashboard database answers, else 503 ``{"status": "unavailable"}``."""
    if dashboard_database_ready():
        return {"status": "ok"}
    return {"status": "unavailable"}, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


def _forget_broken_session() -> None:
    """Drop the request's database session and user, so the error page
    renders without touching the database again (as an anonymous visitor)."""
    try:
        db.session.remove()
    except sa.exc.SQLAlchemyError:
        pass  # its connection is gone anyway
    g._login_user = login_manager.anonymous_user()


def init_app(app: Flask) -> None:
    """Register ``/readyz`` and the handler of :data:`DATABASE_ERRORS` on
    ``app`` (once, from :func:`webapp.create_app`, after
    :func:`webapp.views.errors.init_app`: Flask picks the most specific
    handler, so this one wins over the catch-all 500)."""
    from .views.errors import respond

    app.register_blueprint(bp)

    def database_error(exc: Exception):
        if dashboard_database_ready():
            # a database error that is not the dashboard's own being down
            # (a target's, a bug): the generic 500, logged with its traceback
            app.logger.exception("unhandled error on %s", request.path)
            return respond(500, "Internal Server Error", InternalServerError.description)
        # the class only: a driver's message may name hosts and users
        app.logger.error("dashboard database unavailable on %s (%s)", request.path,
                         type(getattr(exc, "orig", None) or exc).__name__)
        _forget_broken_session()
        response = app.make_response(respond(503, UNAVAILABLE,
                                              "The dashboard cannot reach its own database. "
                                              "Try again in a moment."))
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    for error in DATABASE_ERRORS:
        app.register_error_handler(error, database_error)
