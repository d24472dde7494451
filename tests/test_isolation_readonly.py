"""Looking can never write: read paths (plans, offline SQL downloads, revision
and range SQL, the autogenerate preview) connect with connections the DATABASE
refuses writes on, and rehearsals reach their scratch copy only — checked on
the connection env.py actually made (a custom ``creator=``, an ``ATTACH``, a
hard-coded URL), not on the URL it was given. Issue 17, findings 2 and 3."""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import version_table

BATCH_DROP = 'with op.batch_alter_table("t_r000") as batch: batch.drop_column("name")'
BATCH_ADD = ('with op.batch_alter_table("t_r000") as batch: '
             'batch.add_column(sa.Column("name", sa.String(50)))')

# env.py builds its engine from sqlalchemy.url but opens the connection itself
# (SQLite pragmas, custom drivers): SQLAlchemy's do_connect never fires
ENV_CREATOR = '''
import sqlite3 as _sqlite3
from sqlalchemy import create_engine as _create_engine


def engine_from_config(section, prefix="sqlalchemy.", **kwargs):
    return _create_engine(section[prefix + "url"],
                          creator=lambda: _sqlite3.connect(os.environ["REAL_PATH"]), **kwargs)
'''

# env.py attaches the real file to the connection it was given
ENV_ATTACH = '''
from sqlalchemy import engine_from_config as _engine_from_config, event as _event


def engine_from_config(section, prefix="sqlalchemy.", **kwargs):
    engine = _engine_from_config(section, prefix=prefix, **kwargs)

    @_event.listens_for(engine, "connect")
    def _attach(dbapi_connection, record):
        dbapi_connection.execute("ATTACH DATABASE ? AS real", (os.environ["REAL_PATH"],))
        dbapi_connection.execute("CREATE TABLE real.attached_write (id INTEGER)")

    return engine
'''

# env.py ignores sqlalchemy.url: its own hard-coded database
ENV_HARDCODED = '''
from sqlalchemy import create_engine as _create_engine


def engine_from_config(section, prefix="sqlalchemy.", **kwargs):
    return _create_engine("sqlite:///" + os.environ["REAL_PATH"], **kwargs)
'''

METADATA = '''
import sqlalchemy as _sa
target_metadata = _sa.MetaData()
_sa.Table("widgets", target_metadata, _sa.Column("id", _sa.Integer, primary_key=True))
'''

# env.py writes on the connection in online mode (an audit table, a lock row...)
ENV_WRITES = METADATA + '''
_configure = context.configure


def _configure_and_write(*args, **kwargs):
    if kwargs.get("connection") is not None:
        kwargs["connection"].exec_driver_sql("CREATE TABLE env_wrote (id INTEGER)")
    return _configure(*args, **kwargs)


context.configure = _configure_and_write
'''


def batch_revisions() -> list[Rev]:
    """r000 creates t_r000; r001 drops a column in batch mode (SQLite: offline
    SQL comes from a rehearsal on a scratch copy)."""
    return [Rev("r000", None), Rev("r001", "r000", upgrade=BATCH_DROP, downgrade=BATCH_ADD)]


def viewer_client(make_app, tmp_path, targets: dict):
    app = make_app(write_targets_file(tmp_path / "targets.toml", targets))
    add_user(app, "vera", "viewer")
    client = app.test_client()
    assert login(client, "vera").status_code == 302
    return client


def text(response) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", response.get_data(as_text=True)))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_table(url: str, table: str) -> bool:
    engine = sa.create_engine(url)
    try:
        return sa.inspect(engine).has_table(table)
    finally:
        engine.dispose()


def sqlite_target(make_app, tmp_path, monkeypatch, env_extra: str, revisions=None):
    """A viewer's client on target ``t`` whose env.py is ``ENV_PY + env_extra``;
    REAL_PATH is the target's own (existing, empty) SQLite file."""
    ini = make_env(tmp_path / "env", batch_revisions() if revisions is None else revisions,
                   env_extra=env_extra)
    real = tmp_path / "real.db"
    url = sqlite_url(real)
    monkeypatch.setenv("T_URL", url)
    client = viewer_client(make_app, tmp_path, {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL",
        "env": {"REAL_PATH": str(real)}}})
    return client, real, url


READ_PATHS = ("/targets/t/pending.sql", "/targets/t/revisions/r001/sql",
              "/targets/t/sql?from=&to=heads", "/targets/t/sql?from=r000&to=r001")


@pytest.mark.parametrize(("env_extra", "refusal"), [
    (ENV_CREATOR, "other than the rehearsal's scratch copy"),
    (ENV_ATTACH, "not authorized"),  # SQLite's authorizer denied the ATTACH
    (ENV_HARDCODED, "other than the rehearsal's scratch copy")],
    ids=["creator", "attach", "hardcoded-url"])
def test_rehearsed_sql_never_touches_the_real_sqlite_file(make_app, tmp_path, monkeypatch,
                                                          env_extra, refusal):
    """The SQL of SQLite batch operations comes from a run on a scratch copy.
    An env.py that opens the real file itself (``creator=``), attaches it, or
    hard-codes its URL used to migrate the REAL database to heads on a
    viewer's GET. The connection actually made is checked now: refused."""
    client, real, url = sqlite_target(make_app, tmp_path, monkeypatch, env_extra)
    before = digest(real)
    for path in READ_PATHS:
        response = client.get(path, headers={"HX-Request": "true"})
        assert response.status_code in (200, 409, 422), (path, response.status_code)
        body = text(response)
        assert "Running upgrade" not in body or "scratch copy" in body, path
        assert digest(real) == before, path
    answer = text(client.get("/targets/t/revisions/r001/sql", headers={"HX-Request": "true"}))
    assert refusal in answer
    assert version_table(url) == set()
    assert not has_table(url, "t_r000") and not has_table(url, "attached_write")


def test_preview_on_a_missing_sqlite_file_is_refused_and_creates_nothing(
        make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [], env_extra=METADATA)
    missing = tmp_path / "typo.db"
    monkeypatch.setenv("T_URL", f"sqlite:///{missing}")
    client = viewer_client(make_app, tmp_path, {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL"}})
    response = client.get("/targets/t/preview/result", headers={"HX-Request": "true"})
    assert response.status_code == 409
    assert "does not exist" in text(response)
    assert not missing.exists()
    assert client.get("/targets/t/drift").status_code == 200
    assert not missing.exists()


def test_preview_of_an_unversioned_sqlite_file_creates_no_version_table(
        make_app, tmp_path, monkeypatch):
    client, real, url = sqlite_target(make_app, tmp_path, monkeypatch, METADATA, revisions=[])
    before = digest(real)
    response = client.get("/targets/t/preview/result", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "add table widgets" in text(response)
    assert digest(real) == before
    assert not has_table(url, "alembic_version")


def test_preview_refuses_an_env_py_that_connects_elsewhere(make_app, tmp_path, monkeypatch):
    """The preview checks the database env.py actually connected to."""
    ini = make_env(tmp_path / "env", [], env_extra=METADATA + ENV_HARDCODED)
    other = tmp_path / "other.db"
    sqlite_url(other)
    monkeypatch.setenv("T_URL", sqlite_url(tmp_path / "target.db"))
    client = viewer_client(make_app, tmp_path, {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL",
        "env": {"REAL_PATH": str(other)}}})
    before = digest(other)
    body = text(client.get("/targets/t/preview/result", headers={"HX-Request": "true"}))
    assert "connected to a database other than" in body
    assert "add table widgets" not in body
    assert digest(other) == before


def test_sqlite_refuses_a_write_env_py_makes_during_the_preview(make_app, tmp_path,
                                                                  monkeypatch):
    client, real, url = sqlite_target(make_app, tmp_path, monkeypatch, ENV_WRITES, revisions=[])
    before = digest(real)
    body = text(client.get("/targets/t/preview/result", headers={"HX-Request": "true"}))
    assert "readonly database" in body  # SQLite's own refusal
    assert digest(real) == before
    assert not has_table(url, "env_wrote")


def _server_preview(make_app, tmp_path, monkeypatch, url: str, env_extra: str) -> str:
    ini = make_env(tmp_path / "env", [], env_extra=env_extra)
    monkeypatch.setenv("T_URL", url)
    client = viewer_client(make_app, tmp_path, {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL"}})
    response = client.get("/targets/t/preview/result", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return text(response)


@pytest.mark.mysql
def test_preview_of_an_unversioned_mariadb_database_creates_no_version_table(
        make_app, tmp_path, monkeypatch, mysql_url):
    body = _server_preview(make_app, tmp_path, monkeypatch, mysql_url, METADATA)
    assert "add table widgets" in body
    assert not has_table(mysql_url, "alembic_version")


@pytest.mark.postgresql
def test_preview_of_an_unversioned_postgresql_database_creates_no_version_table(
        make_app, tmp_path, monkeypatch, pg_url):
    body = _server_preview(make_app, tmp_path, monkeypatch, pg_url, METADATA)
    assert "add table widgets" in body
    assert not has_table(pg_url, "alembic_version")


@pytest.mark.mysql
def test_mariadb_itself_refuses_a_write_during_the_preview(make_app, tmp_path, monkeypatch,
                                                           mysql_url):
    body = _server_preview(make_app, tmp_path, monkeypatch, mysql_url, ENV_WRITES)
    assert "READ ONLY transaction" in body  # MariaDB's error 1792, not ours
    assert not has_table(mysql_url, "env_wrote")
    assert not has_table(mysql_url, "alembic_version")


@pytest.mark.postgresql
def test_postgresql_itself_refuses_a_write_during_the_preview(make_app, tmp_path, monkeypatch,
                                                              pg_url):
    body = _server_preview(make_app, tmp_path, monkeypatch, pg_url, ENV_WRITES)
    assert "read-only transaction" in body  # PostgreSQL's own error
    assert not has_table(pg_url, "env_wrote")
    assert not has_table(pg_url, "alembic_version")


def test_read_paths_use_the_readonly_account_when_the_targets_file_names_one(
        make_app, tmp_path, monkeypatch):
    """``readonly_url_env``: plans, SQL and the preview connect with it. Here it
    names a file that does not exist, so each read path says so (the main URL's
    file exists and would have answered)."""
    ini = make_env(tmp_path / "env", batch_revisions(), env_extra=METADATA)
    monkeypatch.setenv("T_URL", sqlite_url(tmp_path / "main.db"))
    readonly = tmp_path / "readonly-replica.db"
    monkeypatch.setenv("T_RO_URL", f"sqlite:///{readonly}")
    client = viewer_client(make_app, tmp_path, {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL",
        "readonly_url_env": "T_RO_URL"}})
    preview = client.get("/targets/t/preview/result", headers={"HX-Request": "true"})
    assert preview.status_code == 409 and "readonly-replica.db" in text(preview)
    pending = client.get("/targets/t/pending.sql")
    assert pending.status_code == 409 and "readonly-replica.db" in text(pending)
    assert not readonly.exists()
