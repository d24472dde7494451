"""HTTP hardening shared by every response: security headers (CSP & co.),
a private instance folder, and ids in URLs bounded to what a row can hold.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.routing import IntegerConverter

HTMX_CDN = "https://cdn.jsdelivr.net/npm/htmx.org@2.0.11/dist/htmx.min.js"
# scripts: our static files and the one pinned CDN file (with SRI in base.html);
# no inline script, no eval, no inline style (htmx's own indicator styles are
# switched off in base.html's htmx-config and live in app.css)
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    f"script-src 'self' {HTMX_CDN}",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])
MAX_ROW_ID = 2**31 - 1  # Integer primary keys are 32-bit on MySQL/PostgreSQL


class RowIdConverter(IntegerConverter):
    """``<int:...>`` bounded to :data:`MAX_ROW_ID`: a larger number is no
    row, so the URL answers 404 (not 500 from the database driver)."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 (werkzeug's name)
        kwargs.setdefault("max", MAX_ROW_ID)
        super().__init__(map, *args, **kwargs)


def security_headers(response: Response, production: bool) -> Response:
    """Add the headers every response carries (see :data:`CONTENT_SECURITY_POLICY`);
    everything but static files is ``Cache-Control: no-store`` (pages show
    data behind a login); HSTS in production."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.endpoint != "static":
        headers["Cache-Control"] = "no-store"
    if production:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
    return response


def secure_instance_folder(path: Path, database_url: str | None = None) -> None:
    """Make the instance folder 0700 and every file in it 0600 (also when it
    already existed); create the SQLite dashboard database there 0600
    before SQLite would create it with the umask's 0644. Runs in every
    process that creates the app (web workers, job processes, queue
    workers) while the others write: files that vanish meanwhile (SQLite's
    ``-journal``) are skipped.

    :param path: the instance folder (created when missing).
    :param database_url: the dashboard's own database URL.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    prefix = "sqlite:///"
    if database_url and database_url.startswith(prefix):
        db_file = Path(database_url[len(prefix):].split("?", 1)[0])
        if db_file.parent.resolve() == path.resolve() and not db_file.exists():
            try:
                os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:  # another process (a job, a worker) was first
                pass
    uid = os.getuid()
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root) / name
            try:
                info = entry.lstat()
                if stat.S_ISLNK(info.st_mode) or info.st_uid != uid:
                    continue
                wanted = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
                if stat.S_IMODE(info.st_mode) != wanted:
                    os.chmod(entry, wanted)
            except FileNotFoundError:
                # gone since the listing: SQLite's -journal comes and goes
                # with every write of the running dashboard and its jobs
                continue


def init_app(app: Flask) -> None:
    """Register the headers and the input checks (:mod:`webapp.web_input`)
    on ``app`` (the converter is set in create_app, before any blueprint
    adds its rules)."""
    from . import web_input

    web_input.init_app(app)  # text input checks and output that never fails on stored text
    production = app.config.get("DASHBOARD_ENV") == "production"

    @app.after_request
    def add_headers(response: Response) -> Response:
        return security_headers(response, production)
