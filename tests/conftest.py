"""Shared fixtures: apps on temporary dashboard databases, logged-in clients,
real MariaDB/PostgreSQL databases (own name per test), a gunicorn server."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MYSQL_SERVER = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PG_SERVER = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "correct horse battery"


# Tests that must share one pytest-xdist worker (make test runs the suite on
# several), by path prefix: every browser test (one Chromium and one live
# gunicorn for all, in file order, as in a serial run), and the MariaDB
# rehearsal tests (rehearsals create and drop temporary server accounts, and
# tests compare the server's account list before and after).
XDIST_GROUPS = {
    "tests/e2e/": "browser",
    "tests/test_isolation_rehearsal_mysql.py": "mariadb-accounts",
    "tests/test_isolation_rehearsal_variants.py": "mariadb-accounts",
    "tests/test_rehearsals.py": "mariadb-accounts",
}


def xdist_group_of(nodeid: str) -> str | None:
    """The :data:`XDIST_GROUPS` group of a test id, or None (any worker)."""
    return next((group for prefix, group in XDIST_GROUPS.items()
                 if nodeid.startswith(prefix)), None)


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` by :data:`XDIST_GROUPS`. (pytest-xdist 3.8's own
    ``xdist_group`` marker renames ``item._nodeid``, which pytest 9.2 no
    longer reads, so the marker has no effect here.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class PathGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid) or super()._split_scope(nodeid)

    return PathGroups(config, log)


def _unavailable(what: str, exc: Exception):
    if IN_CI:
        pytest.fail(f"{what} is required in CI but unavailable: {exc}")
    pytest.skip(f"{what} unavailable: {exc}")


def _server_database(server_url: str, what: str, quote: str):
    """Create a uniquely named database on a server; yield its URL; drop it."""
    name = "adtest_" + secrets.token_hex(5)
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))
    except Exception as exc:  # server down
        engine.dispose()
        _unavailable(what, exc)
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as conn:
            if "postgresql" in server_url:
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            else:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()


@pytest.fixture
def mysql_url():
    """URL of a fresh, empty MariaDB database (dropped after the test)."""
    yield from _server_database(MYSQL_SERVER, "MariaDB", "`")


@pytest.fixture
def pg_url():
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    yield from _server_database(PG_SERVER, "PostgreSQL", '"')


@pytest.fixture(params=["sqlite", "mysql", "postgresql"])
def any_db_url(request, tmp_path):
    """A fresh, empty, existing database on each of the three dialects."""
    if request.param == "sqlite":
        (tmp_path / "target.db").touch()  # an empty file is an empty SQLite database
        yield f"sqlite:///{tmp_path / 'target.db'}"
    elif request.param == "mysql":
        yield from _server_database(MYSQL_SERVER, "MariaDB", "`")
    else:
        yield from _server_database(PG_SERVER, "PostgreSQL", '"')


@pytest.fixture
def instance_path(tmp_path, monkeypatch):
    path = tmp_path / "instance"
    path.mkdir()
    monkeypatch.setenv("DASHBOARD_INSTANCE_PATH", str(path))
    monkeypatch.delenv("DASHBOARD_TARGETS", raising=False)
    monkeypatch.delenv("DASHBOARD_ENV", raising=False)
    return path


@pytest.fixture(scope="session")
def migrated_dashboard_db(tmp_path_factory) -> Path:
    """A SQLite dashboard database migrated to head once (``upgrade head`` on
    ``migrations/``), copied into each test's instance folder."""
    from webapp.cli import upgrade_dashboard_db

    path = tmp_path_factory.mktemp("dashboard-template") / "dashboard.db"
    upgrade_dashboard_db(f"sqlite:///{path}")
    return path


@pytest.fixture
def make_app(instance_path, migrated_dashboard_db):
    """Factory: ``make_app(targets_file=None, **config)`` → app with migrated DB.

    Without ``targets_file`` the bundled demo is used (SQLite in the
    temporary instance folder; prepared with :func:`prepare_demo`). The
    default SQLite dashboard database starts as a copy of
    :func:`migrated_dashboard_db`; any other is migrated with ``upgrade head``.
    """
    from webapp import create_app
    from webapp.cli import upgrade_dashboard_db

    apps = []

    def factory(targets_file: Path | None = None, **config):
        db_file = instance_path / "dashboard.db"
        db_url = f"sqlite:///{db_file}"
        fresh = not db_file.exists()
        overrides = {"TESTING": True, "SECRET_KEY": "test-secret",
                     "SQLALCHEMY_DATABASE_URI": db_url,
                     "TARGETS_FILE": str(targets_file) if targets_file else None, **config}
        app = create_app(overrides)
        if fresh and app.config["SQLALCHEMY_DATABASE_URI"] == db_url:
            shutil.copyfile(migrated_dashboard_db, db_file)  # keeps the file's 0600
        else:
            upgrade_dashboard_db(app.config["SQLALCHEMY_DATABASE_URI"])
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["alembic_dashboard"].engines.dispose()
        with app.app_context():
            from webapp.extensions import db
            db.engine.dispose()


@pytest.fixture(scope="session")
def demo_databases(tmp_path_factory):
    """Demo SQLite databases prepared once like `make run` does; copied per test."""
    from webapp.core.demo import demo_targets, prepare_demo_databases

    folder = tmp_path_factory.mktemp("demo-template")
    prepare_demo_databases(demo_targets(folder))
    return folder


@pytest.fixture
def demo_app(make_app, demo_databases, instance_path):
    """The app with the bundled demo targets, databases prepared like `make run`."""
    for db_file in demo_databases.glob("*.db"):
        shutil.copy(db_file, instance_path / db_file.name)
    return make_app()


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


@pytest.fixture
def logged_in(demo_app):
    """A test client logged in as an admin on the demo app."""
    add_user(demo_app, "alice", "admin")
    client = demo_app.test_client()
    response = login(client, "alice")
    assert response.status_code == 302
    return client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(instance_path: Path, log_path: Path, extra_env: dict | None = None,
                   workers: int = 2, secret: str = "gunicorn-test-secret",
                   port: int | None = None):
    """Run `flask init` (schema, demo databases, admin with PASSWORD), then real
    gunicorn on ``port`` (default: a free one). Return (process, base URL, environment).

    :raises RuntimeError: gunicorn exited or did not listen within 30 s (its log).
    """
    port = port or free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DASHBOARD_TARGETS",
                                                            "DASHBOARD_ENV")}
    env.update({"DASHBOARD_INSTANCE_PATH": str(instance_path), "DASHBOARD_SECRET_KEY": secret,
                "DASHBOARD_ADMIN_PASSWORD": PASSWORD, "PORT": str(port),
                "WEB_CONCURRENCY": str(workers), **(extra_env or {})})
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "init"], cwd=ROOT,
                   env=env, check=True, capture_output=True)
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


def stop_gunicorn(proc: subprocess.Popen) -> None:
    """Stop a server started by :func:`start_gunicorn`."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def gunicorn_server(instance_path, tmp_path):
    """Start real gunicorn: ``start(env_overrides, workers, port) -> base_url``; the
    environment it runs with is ``start.env`` afterwards."""
    procs = []

    def start(extra_env: dict | None = None, workers: int = 2, port: int | None = None) -> str:
        log_path = tmp_path / f"gunicorn-{len(procs)}.log"
        proc, base, env = start_gunicorn(instance_path, log_path, extra_env, workers,
                                         port=port)
        procs.append(proc)
        start.env = env
        start.log_path = log_path
        return base

    yield start
    for proc in procs:
        stop_gunicorn(proc)
