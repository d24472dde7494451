"""Pieces shared by the benchmark scripts: an in-process app with a logged-in
test client, and the statistics they print."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PASSWORD = "violet horse battery staple"  # passes the password policy (no username in it)


def in_scratch_folder(prefix: str, run: Callable[[Path], int], *, keep: bool = False) -> int:
    """``run(tmp)`` in a new temporary folder that is the dashboard's instance
    folder (``tmp/instance``), with no ``DASHBOARD_TARGETS``, ``_ENV`` or
    ``_DATABASE_URL`` from the caller's environment; the folder is removed
    afterwards unless ``keep`` (then its path is printed). Returns run's code."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["DASHBOARD_INSTANCE_PATH"] = str(tmp / "instance")
    for var in ("DASHBOARD_TARGETS", "DASHBOARD_ENV", "DASHBOARD_DATABASE_URL"):
        os.environ.pop(var, None)
    try:
        return run(tmp)
    finally:
        if keep:
            print(f"\nkept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def make_app(targets_file: Path, dashboard_url: str):
    """The dashboard app on ``targets_file``, its own schema migrated, with a
    ``bench`` admin (password :data:`PASSWORD`)."""
    from webapp import create_app
    from webapp.cli import upgrade_dashboard_db
    from webapp.services import accounts

    app = create_app({"SECRET_KEY": "bench-secret", "SQLALCHEMY_DATABASE_URI": dashboard_url,
                      "TARGETS_FILE": str(targets_file)})
    upgrade_dashboard_db(dashboard_url)
    with app.app_context():
        if accounts.user_count() == 0:
            accounts.create_user("bench", "admin", PASSWORD)
    return app


def csrf_from(html: str) -> str:
    """The CSRF token of a page; exits the benchmark if there is none."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    if not match:
        raise SystemExit("no csrf_token on /login")
    return match.group(1)


def logged_in_client(app):
    """A test client logged in as ``bench`` through the real /login form."""
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"username": "bench", "password": PASSWORD,
                                           "csrf_token": token})
    if response.status_code != 302:
        raise SystemExit(f"login failed: HTTP {response.status_code}")
    return client


def ms(seconds: float) -> float:
    """Seconds → milliseconds."""
    return seconds * 1000.0


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` (0..1) of ``values``."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
