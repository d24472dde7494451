"""Issue 17, finding 8: a status that is true, and reads that never create a
writing app.

- A version table holding a revision the script directory does not know is
  an error in the status (card, target page, API), never "up to date", and
  a job there is refused with the revision named.
- A Flask-Migrate app whose ``create_app()`` migrates its own database on
  start (``flask_migrate.upgrade()`` inside the factory, as admin tools do):
  a read (status, history) creates it only with connections the database
  refuses writes on, so an empty database stays empty; a job reports the
  revisions the database really moved, with a warning that the app moved it.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
import sqlalchemy as sa
from support.common import add_user, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.targetenv import shopapp_project, target_venv

from webapp.core.history import HistoryCache
from webapp.core.status import EngineCache, target_status
from webapp.core.targets import Target

UNKNOWN = "deadbeef0000"


def _stamp_unknown(url: str) -> None:
    """A database whose version table holds a revision no script directory has."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) "
                                 "NOT NULL PRIMARY KEY)"))
            conn.execute(sa.text(f"INSERT INTO alembic_version VALUES ('{UNKNOWN}')"))
    finally:
        engine.dispose()


@pytest.fixture
def unknown_env(tmp_path, monkeypatch):
    """(ini, url) of a real Alembic env with 3 revisions and a SQLite
    database stamped with an unknown revision."""
    ini = make_env(tmp_path / "env", linear(3))
    url = sqlite_url(tmp_path / "unknown.db")
    _stamp_unknown(url)
    monkeypatch.setenv("UNKNOWN_URL", url)
    return ini, url


def test_status_names_an_unknown_revision_in_the_version_table(unknown_env):
    ini, _url = unknown_env
    target = Target(name="odd", label="odd", tier="staging", alembic_ini=ini,
                    url_env="UNKNOWN_URL")
    engines = EngineCache()
    try:
        status = target_status(target, HistoryCache(), engines)
    finally:
        engines.dispose()
    assert status.reachable and status.current == (UNKNOWN,)
    assert not status.up_to_date
    assert status.revision_error is not None
    assert f"unknown revision {UNKNOWN} in the version table" in status.revision_error


def test_api_and_pages_report_the_unknown_revision(make_app, tmp_path, unknown_env):
    ini, url = unknown_env
    targets = write_targets_file(tmp_path / "targets.toml", {"odd": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "UNKNOWN_URL"}})
    app = make_app(targets)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()

    [entry] = client.get("/api/v1/targets", headers=headers).json
    for key in ("name", "tier", "current", "heads", "pending", "reachable"):
        assert key in entry
    assert entry["current"] == [UNKNOWN] and entry["reachable"] is True
    assert entry["pending"] == 0
    assert entry["error"] and f"unknown revision {UNKNOWN} in the version table" \
        in entry["error"], entry

    add_user(app, "viewer1", "viewer")
    pages = app.test_client()
    login(pages, "viewer1")
    for path in ("/", "/targets/odd/card", "/targets/odd"):
        html = pages.get(path).get_data(as_text=True)
        if path == "/" and "card-odd" not in html:
            continue  # the dashboard loads its cards lazily: the card route is checked
        assert "up to date" not in html.lower(), path
        if path != "/":
            assert f"unknown revision {UNKNOWN} in the version table" in html, path

    # a job there is refused, naming the revision, and nothing is written
    answer = client.post("/api/v1/targets/odd/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    assert answer.status_code in (400, 404, 409), answer.json
    assert UNKNOWN in answer.json["detail"] and "Traceback" not in answer.json["detail"]
    assert "version table" in answer.json["detail"], answer.json
    assert version_table(url) == {UNKNOWN}


# ---- a Flask-Migrate app that migrates its own database on start ----------

SELF_MIGRATING = '''\
"""An admin tool's factory: the database is migrated whenever the app starts."""

from flask_migrate import upgrade
from shopapp import create_app as _shop_app


def create_app():
    app = _shop_app()
    with app.app_context():
        upgrade()
    return app
'''

SHOPAPP_HEAD = "b8d2763abc84"


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def self_migrating(request, tmp_path):
    """(project folder, database URL, targets entry) of the self-migrating app,
    with an empty database (SQLite: a file with no tables; MariaDB: a fresh one)."""
    project = shopapp_project(tmp_path)
    (project / "selfmigrating.py").write_text(SELF_MIGRATING)
    if request.param == "sqlite":
        db_file = tmp_path / "selfmig.db"
        sqlite3.connect(db_file).close()
        url = sqlite_url(db_file)
    else:
        url = request.getfixturevalue("mysql_url")
    assert _tables(url) == []
    entry = {"tier": "staging", "flask_app": "selfmigrating:create_app", "cwd": str(project),
             "python": str(target_venv()),
             "env": {"SHOPAPP_DATABASE_URL": url, "PYTHONPATH": str(project)}}
    return project, url, entry


def test_history_read_never_migrates_a_self_migrating_app(make_app, tmp_path, self_migrating):
    _project, url, entry = self_migrating
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"selfmig": entry}))
    headers = token_headers(app, "op", "operator")
    client = app.test_client()

    history = client.get("/api/v1/targets/selfmig/history", headers=headers)
    assert history.status_code == 200, history.json
    assert SHOPAPP_HEAD in [r["revision"] for r in history.json]
    [status] = client.get("/api/v1/targets", headers=headers).json
    assert _tables(url) == []  # nothing was created: no version table, no app tables
    # the status says why it could not read the app's database
    assert status["reachable"] is False and status["error"], status
    assert "read-only" in status["error"] and "create_app" in status["error"], status
    # a job needs the app's URL, asked the same read-only way: refused, clearly, nothing run
    answer = client.post("/api/v1/targets/selfmig/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    assert answer.status_code >= 400 and "create_app" in answer.json["detail"], answer.json
    assert _tables(url) == []


def test_job_reports_what_a_self_migrating_app_moved(make_app, tmp_path, monkeypatch,
                                                     self_migrating):
    _project, url, entry = self_migrating
    monkeypatch.setenv("SELFMIG_URL", entry["env"]["SHOPAPP_DATABASE_URL"])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {
        "selfmig": {**entry, "url_env": "SELFMIG_URL"}}))
    headers = token_headers(app, "op", "operator")
    client = app.test_client()

    job = client.post("/api/v1/targets/selfmig/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json
    assert "job" in job, job
    done = wait_job(client, job["job"], headers)
    assert version_table(entry["env"]["SHOPAPP_DATABASE_URL"]) == {SHOPAPP_HEAD}
    # the true movement: from base to head, though the job's own migration applied nothing
    assert done["from"] == [] and done["to"] == [SHOPAPP_HEAD], done
    assert done["applied"] == []
    warning = "moved the database before the migration started"
    assert warning in done["log"], done["log"]
    assert done["error"] and warning in done["error"], done


@pytest.mark.parametrize("backend", ["sqlite", "mysql", "postgresql"])
def test_status_reads_through_a_session_the_database_keeps_read_only(backend, request,
                                                                     tmp_path):
    """The dashboard's own status reads (version table, lock checks) use
    connections on which the database itself refuses writes (issue 17: read
    paths enforced by the database, not only by what our code sends)."""
    from webapp.core.status import current_heads

    if backend == "sqlite":
        url = sqlite_url(tmp_path / "t.db")
        sa.create_engine(url).connect().close()  # an existing, empty file
    else:
        url = request.getfixturevalue({"mysql": "mysql_url", "postgresql": "pg_url"}[backend])
    engines = EngineCache()
    try:
        engine = engines.get(url)
        assert current_heads(engine, "alembic_version") == ()
        with pytest.raises(sa.exc.DBAPIError) as refused:
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE status_wrote (id INTEGER)"))
        assert re.search(r"read.?only|readonly", str(refused.value), re.I), refused.value
    finally:
        engines.dispose()
    check = sa.create_engine(url)
    try:
        assert not sa.inspect(check).has_table("status_wrote")
    finally:
        check.dispose()
