"""Rehearsals on PostgreSQL and MariaDB stay on their scratch copy even when
env.py opens its own connection (issue 17, findings 1 and 2): a ``creator=``
that connects to the real database (SQLAlchemy's ``do_connect`` never fires
for it and the engine URL is the scratch one), or a URL of env.py's own. The
check is made on the connection actually opened (``current_database()``,
``SELECT DATABASE()``) before any statement runs."""

from __future__ import annotations

import pytest
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import tables, token_headers, version_table

from webapp.core.runner import run_command
from webapp.core.targets import load_targets

MADE = 'op.create_table("made_by_rehearsal", sa.Column("id", sa.Integer, primary_key=True))'

# env.py builds its engine from sqlalchemy.url (the scratch copy's) but opens
# each connection itself, to the real database
ENV_CREATOR = '''
from sqlalchemy import create_engine as _create_engine
from sqlalchemy.engine import make_url as _make_url


def _connect_to_real():
    real = _make_url(os.environ["REAL_URL"])
    if real.get_backend_name() == "postgresql":
        import psycopg
        return psycopg.connect(**real.translate_connect_args(username="user",
                                                             database="dbname"))
    import pymysql
    return pymysql.connect(**real.translate_connect_args(username="user"))


def engine_from_config(section, prefix="sqlalchemy.", **kwargs):
    return _create_engine(section[prefix + "url"], creator=_connect_to_real, **kwargs)
'''

# env.py ignores sqlalchemy.url and connects to the real database
ENV_OWN_URL = '''
from sqlalchemy import create_engine as _create_engine


def engine_from_config(section, prefix="sqlalchemy.", **kwargs):
    return _create_engine(os.environ["REAL_URL"], **kwargs)
'''


def rehearse(make_app, tmp_path, monkeypatch, url: str, env_extra: str):
    """Target ``t`` on ``url`` at r000; r001 creates a table; env.py is
    ``env_extra``'s variant; rehearse ``upgrade heads`` through the API."""
    revs = [Rev("r000", None), Rev("r001", "r000", upgrade=MADE, downgrade="pass")]
    plain = make_env(tmp_path / "plain", revs)
    ini = make_env(tmp_path / "env", revs, env_extra=env_extra)
    monkeypatch.setenv("T_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL",
        "env": {"REAL_URL": url}}})
    plain_targets = write_targets_file(tmp_path / "plain.toml", {"t": {
        "tier": "staging", "alembic_ini": str(plain), "url_env": "T_URL"}})
    run_command(load_targets(plain_targets)["t"], "upgrade", "r000", url=url)
    assert version_table(url) == {"r000"}
    app = make_app(targets)
    headers = token_headers(app, "pipeline", "operator")
    return app.test_client().post("/api/v1/targets/t/rehearsals",
                                  json={"command": "upgrade", "revision": "heads"},
                                  headers=headers)


def assert_refused_and_real_unchanged(answer, url: str) -> None:
    body = answer.get_json()
    assert answer.status_code in (201, 409, 422), body
    assert body.get("passed") is not True, body
    assert "made_by_rehearsal" not in tables(url)
    assert version_table(url) == {"r000"}


@pytest.mark.postgresql
@pytest.mark.parametrize("env_extra", [ENV_CREATOR, ENV_OWN_URL], ids=["creator", "own-url"])
def test_postgresql_rehearsal_never_reaches_the_real_database(make_app, tmp_path, monkeypatch,
                                                               pg_url, env_extra):
    answer = rehearse(make_app, tmp_path, monkeypatch, pg_url, env_extra)
    assert_refused_and_real_unchanged(answer, pg_url)


@pytest.mark.mysql
@pytest.mark.parametrize("env_extra", [ENV_CREATOR, ENV_OWN_URL], ids=["creator", "own-url"])
def test_mariadb_rehearsal_never_reaches_the_real_database(make_app, tmp_path, monkeypatch,
                                                            mysql_url, env_extra):
    answer = rehearse(make_app, tmp_path, monkeypatch, mysql_url, env_extra)
    assert_refused_and_real_unchanged(answer, mysql_url)
