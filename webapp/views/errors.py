"""Error pages: HTML for pages, JSON for ``/api/``; never a traceback or secret."""

from __future__ import annotations

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError


def respond(code: int, title: str, description: str):
    """The error answer: JSON ``{"error": title in lower case, "detail"}`` under
    ``/api/``, the error page elsewhere, with status ``code``."""
    if request.path.startswith("/api/"):
        return jsonify(error=title.lower(), detail=description), code
    return render_template("errors/error.html", code=code, title=title,
                           description=description), code


def init_app(app: Flask) -> None:
    """Register the handlers on ``app``."""

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return respond(400, "Bad Request",
                        f"The form's security token is missing or expired ({exc.description}). "
                        "Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return respond(exc.code or 500, exc.name, exc.description or "")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unhandled error on %s", request.path)
        return respond(500, "Internal Server Error", InternalServerError.description)
