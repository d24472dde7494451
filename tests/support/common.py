"""Helpers shared by the tests (imported as ``from support.common import ...``):
the test servers' URLs, accounts and logins through the real form, free
ports and a real gunicorn. Fixtures stay in ``tests/conftest.py``."""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MYSQL_SERVER = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PG_SERVER = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"


def unavailable(what: str, exc: Exception):
    """Skip (locally) or fail (in CI) a test whose server ``what`` is down."""
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


def add_user(app, username: str, role: str, password: str = PASSWORD):
    """Create an account in ``app``'s database."""
    from webapp.services import accounts

    with app.app_context():
        accounts.create_user(username, role, password)


def csrf_from(html: str) -> str:
    """The CSRF token embedded in a page."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or \
        re.search(r'value="([^"]+)"[^>]*name="csrf_token"', html)
    assert match, "no csrf_token in page"
    return match.group(1)


def login(client, username: str, password: str = PASSWORD):
    """Log ``client`` in through the real form (with its CSRF token)."""
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(instance_path: Path, log_path: Path, extra_env: dict | None = None,
                   workers: int = 2, secret: str = "gunicorn-test-secret",
                   port: int | None = None, standbys: bool = False):
    """Run `flask init` (schema, demo databases, admin with PASSWORD), then real
    gunicorn on ``port`` (default: a free one). Return (process, base URL, environment).

    :param standbys: keep the default warm standby job processes; off
        unless asked for, as a test seldom uses what they save and each
        costs a process start-up. (The agent fork servers stay on: a server
        starts only when a read needs it, and then saves every later read
        its start-up.)

    :raises RuntimeError: gunicorn exited or did not listen within 30 s (its log).
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DASHBOARD_TARGETS",
                                                            "DASHBOARD_ENV")}
    env.update({"DASHBOARD_INSTANCE_PATH": str(instance_path), "DASHBOARD_SECRET_KEY": secret,
                "DASHBOARD_ADMIN_PASSWORD": PASSWORD, "PORT": str(port),
                "WEB_CONCURRENCY": str(workers),
                **({} if standbys else {"DASHBOARD_JOB_STANDBYS": "0"}),
                **(extra_env or {})})
    _init_instance(instance_path, env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}", env
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text()) from None
            time.sleep(0.1)
    stop_gunicorn(proc)
    raise RuntimeError("gunicorn did not start")


# instance folders this test process has run `flask init` in, by what init
# depends on (see _init_key): later servers with the same settings start
# from a copy of one (init costs ~2 s of CPU, most of it importing the app)
_INITIALISED: dict[tuple, Path] = {}


def _init_key(env: dict) -> tuple | None:
    """What `flask init` makes of ``env``: whether the catalog is the demo
    (its databases are prepared in the instance folder, their URLs from
    ``DEMO_*``) and the admin's password. None when the dashboard database is
    not the instance folder's SQLite file (then init always runs)."""
    if env.get("DASHBOARD_DATABASE_URL"):
        return None
    return (not env.get("DASHBOARD_TARGETS"), env.get("DASHBOARD_ADMIN_PASSWORD"),
            tuple(sorted((k, v) for k, v in env.items() if k.startswith("DEMO_"))))


def _init_instance(instance_path: Path, env: dict) -> None:
    """Run `flask init` for ``instance_path`` (schema, demo databases, the
    admin), or copy in an instance folder this process initialised with the
    same :func:`_init_key` (an empty ``instance_path`` only)."""
    key = _init_key(env)
    template = _INITIALISED.get(key) if key is not None else None
    if template is not None and not any(instance_path.iterdir()):
        shutil.copytree(template, instance_path, dirs_exist_ok=True)
        return
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
    if key is not None and key not in _INITIALISED:
        template = Path(tempfile.mkdtemp(prefix="dashboard-instance-"))
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        shutil.copytree(instance_path, template, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.dashboard-lock", "history-cache"))
        _INITIALISED[key] = template


def stop_gunicorn(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_gunicorn`."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
