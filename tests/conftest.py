"""Shared fixtures: apps on temporary dashboard databases, logged-in clients,
real MariaDB/PostgreSQL databases (own name per test), a gunicorn server."""

from __future__ import annotations

import secrets
import shutil
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.common import (  # noqa: E402  (after the sys.path lines above)
    MYSQL_SERVER,
    PG_SERVER,
    add_user,
    login,
    start_gunicorn,
    stop_gunicorn,
    unavailable,
)

# Tests that must share one pytest-xdist worker (make test runs the suite on
# several), by path prefix, first match wins: the screens tests (their own
# gunicorn, a Chromium of their worker), every other browser test (one
# Chromium and one live gunicorn for all, in file order, as in a serial
# run), and the MariaDB rehearsal tests (rehearsals create and drop
# temporary server accounts, and tests compare the server's account list
# before and after).
XDIST_GROUPS = {
    "tests/e2e/test_screens.py": "browser-screens",
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
        unavailable(what, exc)
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
def make_app(instance_path, migrated_dashboard_db, request):
    """Factory: ``make_app(targets_file=None, **config)`` → app with migrated DB.

    Without ``targets_file`` the bundled demo is used (SQLite in the
    temporary instance folder; prepared with :func:`prepare_demo`). The
    default SQLite dashboard database starts as a copy of
    :func:`migrated_dashboard_db`; any other is migrated with ``upgrade head``.

    Jobs run on the in-process launcher (a thread of the test's process
    follows the migration's own process), unless the test is marked
    ``job_process`` (its subject is the job's process: killed, paused,
    its environment, its standbys) or sets ``JOB_LAUNCHER`` / ``BROKER_URL``.
    The job threads still running are waited for at teardown.
    """
    in_process = request.node.get_closest_marker("job_process") is None
    from webapp import create_app
    from webapp.cli import upgrade_dashboard_db

    apps = []

    def factory(targets_file: Path | None = None, **config):
        db_file = instance_path / "dashboard.db"
        db_url = f"sqlite:///{db_file}"
        fresh = not db_file.exists()
        # no warm standby job processes (each costs a start-up a test rarely
        # uses: tests/test_job_standby.py turns them on); agents are forked
        # from this test process's fork server (the shipped default), which
        # lives on from test to test
        # scrypt at N=2**10 instead of 2**15 (0.005 s a hash instead of 0.15 s: the
        # suite creates and logs in thousands of accounts; the shipped cost is
        # checked in tests/test_auth.py)
        overrides = {"TESTING": True, "SECRET_KEY": "test-secret", "JOB_STANDBYS": 0,
                     "PASSWORD_HASH_METHOD": "scrypt:1024:8:1",
                     "SQLALCHEMY_DATABASE_URI": db_url,
                     "TARGETS_FILE": str(targets_file) if targets_file else None, **config}
        if in_process and "JOB_LAUNCHER" not in config and not config.get("BROKER_URL"):
            overrides["JOB_LAUNCHER"] = "inprocess"
        app = create_app(overrides)
        if fresh and app.config["SQLALCHEMY_DATABASE_URI"] == db_url:
            shutil.copyfile(migrated_dashboard_db, db_file)  # keeps the file's 0600
        else:
            upgrade_dashboard_db(app.config["SQLALCHEMY_DATABASE_URI"])
        apps.append(app)
        return app

    yield factory
    for app in apps:
        launcher = app.extensions.get("alembic_dashboard.launcher")
        if hasattr(launcher, "close"):
            launcher.close()
        if hasattr(launcher, "join"):
            launcher.join(60)
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


@pytest.fixture
def logged_in(demo_app):
    """A test client logged in as an admin on the demo app."""
    add_user(demo_app, "alice", "admin")
    client = demo_app.test_client()
    response = login(client, "alice")
    assert response.status_code == 302
    return client


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
