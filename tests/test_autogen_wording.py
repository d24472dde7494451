"""Wording of the autogenerate preview (issue 22, item 6): unnamed constraints
are named by their columns (never "drop constraint None"), and a column type
change is destructive only when it narrows — judged on a real Alembic
environment against a real database of each dialect, which reflect
constraint names differently (SQLite: none; MariaDB: a unique constraint is
a unique index named after its column; PostgreSQL: generated names)."""

from __future__ import annotations

import html
import re

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import mysql, postgresql
from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file

from webapp.agent.alembic_dashboard_agent.type_changes import judge_type_change

# the database: unnamed UNIQUE and FOREIGN KEY, as plain SQL creates them
SCHEMA = (
    'op.execute("CREATE TABLE orgs (id INTEGER NOT NULL PRIMARY KEY)"); '
    'op.execute("CREATE TABLE users (id INTEGER NOT NULL PRIMARY KEY, email VARCHAR(256), '
    'bio VARCHAR(256), n INTEGER, big BIGINT, amt NUMERIC(10, 2), org_id INTEGER, '
    'nick VARCHAR(20), UNIQUE (email), FOREIGN KEY (org_id) REFERENCES orgs (id))")')

# the models: email widened, bio narrowed, n and amt widened, big narrowed; the
# unique constraint on email and the foreign key gone; an unnamed unique on nick
MODELS = '''
import sqlalchemy as sa
target_metadata = sa.MetaData()
sa.Table("orgs", target_metadata, sa.Column("id", sa.Integer, primary_key=True))
sa.Table("users", target_metadata,
         sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
         sa.Column("email", sa.String(1024)), sa.Column("bio", sa.String(100)),
         sa.Column("n", sa.BigInteger), sa.Column("big", sa.Integer),
         sa.Column("amt", sa.Numeric(12, 2)), sa.Column("org_id", sa.Integer),
         sa.Column("nick", sa.String(20)), sa.UniqueConstraint("nick"))
'''


def wording_app(make_app, tmp_path, monkeypatch, url):
    """A target whose database has SCHEMA (upgraded by Alembic) and whose
    models are MODELS; returns (app, logged-in operator client)."""
    ini = make_env(tmp_path / "env", [Rev("r000", upgrade=SCHEMA,
                                          downgrade='op.drop_table("users"); '
                                                    'op.drop_table("orgs")')],
                   env_extra=MODELS)
    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    monkeypatch.setenv("WORDING_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "WORDING_URL",
        "policy": {"allow_revision_authoring": True}}}))
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    return app, client


def preview_changes(app) -> list[dict]:
    from webapp.services import authoring
    catalog = app.extensions["alembic_dashboard"]
    with app.app_context():
        result = authoring.preview(catalog, catalog.get("shop"))
    assert result.error is None, result.error
    return result.changes


def change(changes: list[dict], start: str) -> dict:
    found = [c for c in changes if c["text"].startswith(start)]
    assert len(found) == 1, (start, [c["text"] for c in changes])
    return found[0]


def test_preview_judges_type_changes_and_names_constraints_by_columns(
        make_app, tmp_path, monkeypatch, any_db_url):
    app, _ = wording_app(make_app, tmp_path, monkeypatch, any_db_url)
    changes = preview_changes(app)
    texts = [c["text"] for c in changes]
    assert not any("None" in t for t in texts), texts

    widened = change(changes, "alter users.email type")
    assert widened["text"].endswith("VARCHAR(256) → VARCHAR(1024)")
    assert not widened["destructive"] and "widening" in widened["why"]
    narrowed = change(changes, "alter users.bio type")
    assert narrowed["destructive"] and "narrowing" in narrowed["why"]
    assert not change(changes, "alter users.n type")["destructive"]  # INTEGER -> BIGINT
    assert change(changes, "alter users.big type")["destructive"]  # BIGINT -> INTEGER
    assert not change(changes, "alter users.amt type")["destructive"]  # NUMERIC(10,2)->(12,2)

    # the dropped foreign key: by its columns and what it refers to
    dropped_fk = [c for c in changes if c["kind"] == "remove_fk"]
    assert len(dropped_fk) == 1 and dropped_fk[0]["destructive"], texts
    assert dropped_fk[0]["text"].endswith("users (org_id) -> orgs (id)"), texts
    if any_db_url.startswith("sqlite"):  # unnamed as reflected
        assert dropped_fk[0]["text"] == "drop foreign key users (org_id) -> orgs (id)"
    # the unnamed unique constraint the models add
    assert "add unique constraint on users (nick)" in texts

    # the unique constraint on email, created unnamed: by its columns where the
    # dialect reflects it (SQLite reflects it unnamed, and Alembic never drops
    # an unnamed constraint it cannot name)
    dropped_unique = [c for c in changes if c["kind"] in ("remove_constraint", "remove_index")]
    if any_db_url.startswith("sqlite"):
        assert dropped_unique == []
    elif any_db_url.startswith("mysql"):  # a unique index named after its column
        assert [c["text"] for c in dropped_unique] == ["drop index email on users (email)"]
        assert dropped_unique[0]["destructive"] and "uniqueness" in dropped_unique[0]["why"]
    else:  # a generated name
        assert [c["text"] for c in dropped_unique] == [
            "drop constraint users_email_key on users (email)"]
        assert dropped_unique[0]["destructive"]


def test_preview_page_marks_only_the_narrowing(make_app, tmp_path, monkeypatch):
    _, client = wording_app(make_app, tmp_path, monkeypatch, sqlite_url(tmp_path / "w.db"))
    page = client.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    assert page.status_code == 200
    items = {html.unescape(re.sub(r"<[^>]+>", "", li)).strip(): li for li in
             re.findall(r"<li class=\"change[^\"]*\">.*?</li>", page.get_data(as_text=True))}
    widened = next(li for text, li in items.items() if "alter users.email type" in text)
    narrowed = next(li for text, li in items.items() if "alter users.bio type" in text)
    assert "destructive" not in widened and "widening" in widened
    assert "destructive" in narrowed
    assert any(text.endswith("drop foreign key users (org_id) -> orgs (id) — the rule it "
                             "enforced is gone") for text in items), list(items)
    assert not any("None" in text for text in items), list(items)


@pytest.mark.parametrize(("old", "new", "destructive"), [
    (sa.VARCHAR(256), sa.String(1024), False),
    (sa.VARCHAR(256), sa.String(255), True),
    (sa.VARCHAR(256), sa.Text(), False),
    (sa.TEXT(), sa.String(100), True),
    (mysql.VARCHAR(256), sa.String(1024), False),
    (mysql.VARCHAR(256), sa.String(1024, collation="utf8mb4_bin"), True),
    (sa.INTEGER(), sa.BigInteger(), False),
    (sa.SMALLINT(), sa.Integer(), False),
    (sa.BIGINT(), sa.Integer(), True),
    (mysql.INTEGER(display_width=11), sa.BigInteger(), False),
    (mysql.TINYINT(), sa.SmallInteger(), False),
    (mysql.INTEGER(unsigned=True), sa.Integer(), True),
    (mysql.INTEGER(unsigned=True), sa.BigInteger(), False),
    (sa.Integer(), mysql.INTEGER(unsigned=True), True),
    (sa.NUMERIC(10, 2), sa.Numeric(12, 2), False),
    (mysql.DECIMAL(10, 2), sa.Numeric(12, 4), False),
    (sa.NUMERIC(10, 2), sa.Numeric(8, 2), True),
    (sa.NUMERIC(10, 2), sa.Numeric(10, 1), True),
    (sa.NUMERIC(10, 2), sa.Numeric(10, 3), True),  # one digit fewer before the point
    (sa.NUMERIC(10, 2), sa.Numeric(), True),  # unknown precision: err on the safe side
    (sa.VARCHAR(10), sa.Integer(), True),
    (sa.Integer(), sa.String(20), True),
    (sa.Integer(), sa.Numeric(20, 0), True),
    (sa.CHAR(10), sa.String(20), True),
    (sa.Boolean(), sa.Integer(), True),
    (sa.DateTime(), sa.DateTime(timezone=True), True),
    (sa.JSON(), postgresql.JSONB(), True),
    (mysql.TEXT(), mysql.MEDIUMTEXT(), False),
    (mysql.LONGTEXT(), sa.Text(), True),
    (mysql.VARCHAR(100), mysql.TINYTEXT(), True),  # 100 characters may take 400 bytes
    (mysql.TINYTEXT(), sa.String(255), False),
    (sa.REAL(), sa.Double(), False),
    (sa.Double(), sa.REAL(), True),
    (mysql.ENUM("a", "b"), sa.Enum("a", "b", "c"), False),
    (mysql.ENUM("a", "b"), sa.Enum("a"), True),
    (sa.VARBINARY(16), sa.LargeBinary(), False),
    (sa.VARBINARY(16), sa.VARBINARY(8), True),
    (sa.NVARCHAR(10), sa.VARCHAR(20), True),
])
def test_type_change_judgement(old, new, destructive):
    flagged, why = judge_type_change(old, new)
    assert flagged is destructive, (old, new, why)
    assert why
