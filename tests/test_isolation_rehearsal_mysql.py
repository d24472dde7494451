"""MariaDB/MySQL rehearsals cannot reach the real schema (issue 17, finding 1).

On MySQL a schema is a database: a revision run on the scratch copy with the
target's own account could write to the real one (``schema=<real db>``,
``INSERT INTO <real db>.t``, ``USE <real db>``). A rehearsal therefore runs
as a temporary account granted rights on the scratch schema only — the
server refuses the rest — or on the separate rehearsal server
(``rehearsal_url_env``); otherwise it is refused, nothing run.
"""

from __future__ import annotations

import re
import secrets
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from support.common import MYSQL_SERVER
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import tables, token_headers, version_table

from webapp.core.runner import run_command
from webapp.core.targets import load_targets

pytestmark = pytest.mark.mysql

MADE = 'sa.Column("id", sa.Integer, primary_key=True)'


def _database(url: str) -> str:
    return sa.engine.make_url(url).database


def rows(url: str, table: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}"))]
    finally:
        engine.dispose()


def server(sql: str, **params) -> list[tuple]:
    """Run ``sql`` as root on the test server (autocommit)."""
    engine = sa.create_engine(MYSQL_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def accounts() -> set[str]:
    return {r[0] for r in server("SELECT user FROM mysql.user")}


def scratch_databases(prefix: str) -> list[str]:
    return [r[0] for r in server("SHOW DATABASES") if r[0].startswith(prefix + "_rehearsal_")]


@contextmanager
def limited_account(*grants: str):
    """A MariaDB account with only ``grants`` (``GRANT ... ON <these>``, no
    CREATE USER); yields (user, password); dropped afterwards."""
    user, password = "adt_" + secrets.token_hex(4), secrets.token_hex(12)
    host = server("SELECT USER()")[0][0].rsplit("@", 1)[1]
    server(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
    try:
        for on in grants:
            server(f"GRANT ALL ON {on} TO '{user}'@'{host}'")
        yield user, password
    finally:
        server(f"DROP USER IF EXISTS '{user}'@'{host}'")


def as_account(url: str, user: str, password: str, database: str | None = None) -> str:
    parsed = sa.engine.make_url(url).set(username=user, password=password)
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def rehearse(make_app, tmp_path, monkeypatch, url: str, upgrade: str, *,
             rehearsal_url: str | None = None, admin_url: str | None = None):
    """A target on ``url`` at r000 (table t_r000 with one row) and r001 doing
    ``upgrade``; rehearse ``upgrade heads`` through the API; return the answer."""
    revs = [Rev("r000", None), Rev("r001", "r000", upgrade=upgrade, downgrade="pass")]
    ini = make_env(tmp_path / "env", revs)
    monkeypatch.setenv("ISO_URL", url)
    spec = {"tier": "production", "alembic_ini": str(ini), "url_env": "ISO_URL",
            "policy": {"approvals_required": 1}}
    if rehearsal_url:
        monkeypatch.setenv("ISO_REHEARSAL_URL", rehearsal_url)
        spec["rehearsal_url_env"] = "ISO_REHEARSAL_URL"
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": spec})
    run_command(load_targets(targets)["shop"], "upgrade", "r000", url=admin_url or url)
    server(f"INSERT INTO `{_database(url)}`.t_r000 (id, name) VALUES (1, 'real')")
    assert version_table(url) == {"r000"}
    app = make_app(targets)
    headers = token_headers(app, "pipeline", "operator")
    return app.test_client().post("/api/v1/targets/shop/rehearsals",
                                  json={"command": "upgrade", "revision": "heads"},
                                  headers=headers)


def assert_real_unchanged(url: str) -> None:
    assert tables(url) == {"alembic_version", "t_r000"}
    assert rows(url, "t_r000") == [(1, "real")]
    assert version_table(url) == {"r000"}
    assert scratch_databases(_database(url)) == []


def escapes(real: str) -> dict[str, str]:
    return {
        "schema": f'op.create_table("made_by_rehearsal", {MADE}, schema="{real}")',
        "insert": f'op.execute("INSERT INTO {real}.t_r000 (id, name) VALUES (2, \'scratch\')")',
        "use": f'op.execute("USE {real}"); op.create_table("made_by_rehearsal", {MADE})',
        # server-wide escapes: give itself rights on the real schema; a global
        # setting (set to the value it has: harmless if it ever ran)
        "grant": f'op.execute("GRANT ALL ON {real}.* TO CURRENT_USER()")',
        "set_global": 'op.execute("SET GLOBAL max_connect_errors = @@GLOBAL.max_connect_errors")',
    }


@pytest.mark.parametrize("escape", ["schema", "insert", "use", "grant", "set_global"])
def test_a_revision_reaching_the_real_schema_is_refused_by_the_server(
        make_app, tmp_path, monkeypatch, mysql_url, escape):
    """(a) schema=<real db>, (b) INSERT INTO <real db>.t, (c) USE <real db>
    (and GRANT to itself, SET GLOBAL): the rehearsal fails (the server
    refused: access denied) and the real schema has no new table, no new
    row, the same revision; the temporary account is gone afterwards."""
    before = accounts()
    real = _database(mysql_url)
    try:
        answer = rehearse(make_app, tmp_path, monkeypatch, mysql_url, escapes(real)[escape])
    finally:
        if escape == "grant":  # had it run as root: take the grant back
            try:
                server(f"REVOKE ALL ON `{real}`.* FROM CURRENT_USER()")
            except sa.exc.DBAPIError:
                pass
    assert answer.status_code == 201, answer.json
    result = answer.json
    assert result["passed"] is False, result
    assert result["failed_revision"] == "r001"
    assert "denied" in result["error"].lower(), result["error"]
    assert_real_unchanged(mysql_url)
    assert accounts() <= before


def test_a_clean_revision_passes_as_a_temporary_account_that_is_dropped(
        make_app, tmp_path, monkeypatch, mysql_url):
    """(d) a clean revision passes; (e) it ran as a temporary account (named
    in the result, never its password) that no longer exists afterwards."""
    before = accounts()
    answer = rehearse(make_app, tmp_path, monkeypatch, mysql_url,
                      f'op.create_table("t_r001", {MADE})')
    assert answer.status_code == 201, answer.json
    result = answer.json
    assert result["passed"] is True, result
    assert result["started_at"] == ["r000"] and [s["revision"] for s in result["steps"]] \
        == ["r001"]
    assert "temporary account" in result["copy"], result["copy"]
    account = result["account"]
    assert account.startswith("rehearsal_") and account not in before
    assert account not in accounts() and accounts() <= before
    assert_real_unchanged(mysql_url)


def test_the_temporary_password_is_scrubbed_from_the_result(make_app, tmp_path, monkeypatch,
                                                           mysql_url):
    """A revision that quotes the URL env.py got (the temporary account's):
    the stored error shows the account, never its password."""
    leak = ('if not op.get_context().as_sql: raise RuntimeError('
            'op.get_bind().engine.url.render_as_string(hide_password=False))')
    answer = rehearse(make_app, tmp_path, monkeypatch, mysql_url, leak)
    assert answer.status_code == 201, answer.json
    result = answer.json
    assert result["passed"] is False and result["failed_revision"] == "r001"
    match = re.search(r"mysql\+pymysql://(\w+):([^@]*)@", result["error"])
    assert match, result["error"]
    assert match.group(1) == result["account"] and match.group(2) == "***", result["error"]
    assert_real_unchanged(mysql_url)


def test_an_account_that_may_not_create_users_is_refused_nothing_run(
        make_app, tmp_path, monkeypatch, mysql_url):
    """(f) the target's account has rights on its database (and could create
    the scratch schema) but no CREATE USER: refused with what to configure;
    the revision (which that account could run on the real schema) never ran."""
    real = _database(mysql_url)
    with limited_account(f"`{real}`.*", f"`{real}\\_rehearsal\\_%`.*") as (user, password):
        url = as_account(mysql_url, user, password)
        answer = rehearse(make_app, tmp_path, monkeypatch, url,
                          escapes(real)["schema"], admin_url=mysql_url)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"] == "unsupported"
    detail = answer.json["detail"]
    assert "rehearsal_url_env" in detail and "CREATE USER" in detail, detail
    assert password not in detail
    assert_real_unchanged(mysql_url)


@contextmanager
def rehearsal_server(real: str):
    """(g)'s setting: the target's account with rights on ``real`` and its
    scratch schemas (no CREATE USER: without a rehearsal server its
    rehearsals are refused; it could build a scratch copy itself), and
    "the rehearsal server" — a second database on the same MariaDB with an
    account that has rights there and on its scratch schemas only. Yields
    (target account, rehearsal account): each (user, password)."""
    home = "adtest_" + secrets.token_hex(5)
    server(f"CREATE DATABASE `{home}`")
    try:
        with limited_account(f"`{real}`.*", f"`{real}\\_rehearsal\\_%`.*") as own, \
                limited_account(f"`{home}`.*", f"`{home}\\_rehearsal\\_%`.*") as other:
            yield home, own, other
    finally:
        server(f"DROP DATABASE IF EXISTS `{home}`")


def test_a_rehearsal_server_is_used_when_the_targets_file_names_one(
        make_app, tmp_path, monkeypatch, mysql_url):
    """(g) rehearsal_url_env names the rehearsal server: the scratch copy is
    built and run there, as its account; a clean revision passes."""
    real = _database(mysql_url)
    with rehearsal_server(real) as (home, (user, password), (r_user, r_pw)):
        answer = rehearse(make_app, tmp_path, monkeypatch, as_account(mysql_url, user, password),
                          f'op.create_table("t_r001", {MADE})',
                          rehearsal_url=as_account(mysql_url, r_user, r_pw, home),
                          admin_url=mysql_url)
        assert answer.status_code == 201, answer.json
        assert answer.json["passed"] is True, answer.json
        assert answer.json["account"] == r_user
        assert "rehearsal server" in answer.json["copy"]
        assert r_pw not in str(answer.json)
        assert_real_unchanged(mysql_url)
        assert scratch_databases(home) == []


def test_on_the_rehearsal_server_the_real_schema_is_out_of_reach(
        make_app, tmp_path, monkeypatch, mysql_url):
    """(g) a revision reaching for the real schema, rehearsed on the
    rehearsal server: its account has no right there, the server refuses."""
    real = _database(mysql_url)
    with rehearsal_server(real) as (home, (user, password), (r_user, r_pw)):
        answer = rehearse(make_app, tmp_path, monkeypatch, as_account(mysql_url, user, password),
                          escapes(real)["schema"],
                          rehearsal_url=as_account(mysql_url, r_user, r_pw, home),
                          admin_url=mysql_url)
        assert answer.status_code == 201, answer.json
        assert answer.json["passed"] is False, answer.json
        assert "denied" in answer.json["error"].lower(), answer.json["error"]
        assert r_pw not in str(answer.json)
        assert_real_unchanged(mysql_url)
        assert scratch_databases(home) == []
