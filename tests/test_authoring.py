"""Autogenerate preview, revision authoring, merges, offline SQL downloads,
drift, and plan lint — compared with Alembic's own output."""

from __future__ import annotations

import html as html_lib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from support.common import add_user, csrf_from, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import version_table

from webapp.core.demo import DEMO_TARGETS_FILE
from webapp.core.lint import lint_sql

DEMO = DEMO_TARGETS_FILE.parent / "demo"


def demo_copy(tmp_path, url: str):
    """A copy of the demo environment at heads on ``url`` (models editable)."""
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("__pycache__"))
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "heads")
    return root, config


def authoring_app(make_app, tmp_path, monkeypatch, ini, url, **policy):
    monkeypatch.setenv("AUTH_URL", url)
    spec = {"tier": "staging", "alembic_ini": str(ini), "url_env": "AUTH_URL",
            "policy": {"allow_revision_authoring": True, **policy}}
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": spec}))
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    return app, client


def change_models_and_database(root, url):
    """Models: widen users.gender, add users.nickname. Database: drop an index,
    add a stray table."""
    models = root / "demo_models.py"
    text = models.read_text()
    text = text.replace("gender: Mapped[str | None] = mapped_column(String(1), nullable=True)",
                        "gender: Mapped[str | None] = mapped_column(String(2), nullable=True)\n"
                        "    nickname: Mapped[str | None] = mapped_column(String(50), "
                        "nullable=True)")
    models.write_text(text)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE legacy_notes (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("DROP INDEX ix_products_name" if "sqlite" in url or
                             "postgresql" in url else "DROP INDEX ix_products_name ON products"))
    engine.dispose()


def body(source: str, function: str) -> str:
    """The body of ``def function()`` in a revision file, without the docstring."""
    match = re.search(rf"def {function}\(\) -> None:\n(.*?)(?=\n\n\ndef |\Z)", source, re.S)
    lines = [line for line in match.group(1).splitlines() if '"""' not in line]
    return "\n".join(lines).strip()


def test_preview_matches_alembic_revision_autogenerate(make_app, tmp_path, monkeypatch,
                                                       any_db_url):
    root, config = demo_copy(tmp_path, any_db_url)
    change_models_and_database(root, any_db_url)
    before_files = sorted(p.name for p in (root / "versions").iterdir())
    before_version = version_table(any_db_url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini",
                                any_db_url)
    page = client.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    text = re.sub(r"<[^>]+>", "", html)
    assert "add column users.nickname VARCHAR(50) NULL" in text
    assert "alter users.gender type VARCHAR(1) → VARCHAR(2)" in text
    assert "drop table legacy_notes" in text and "add index ix_products_name" in text
    assert "destructive" in html.split("drop table legacy_notes")[0].rsplit("<li", 1)[1]
    # writes nothing
    assert sorted(p.name for p in (root / "versions").iterdir()) == before_files
    assert version_table(any_db_url) == before_version

    # the same bodies as `alembic revision --autogenerate` writes (Alembic's own
    # CLI in a fresh process, so the edited models are imported anew)
    from webapp.services import authoring
    catalog = app.extensions["alembic_dashboard"]
    with app.app_context():
        result = authoring.preview(catalog, catalog.get("shop"))
    ini_text = (root / "alembic.ini").read_text()
    (root / "alembic.ini").write_text(re.sub(
        r"(?m)^sqlalchemy\.url\s*=.*$", "sqlalchemy.url = " + any_db_url.replace("%", "%%"),
        ini_text))
    cli = subprocess.run([str(Path(sys.executable).with_name("alembic")), "-c",
                          str(root / "alembic.ini"), "revision", "--autogenerate", "-m",
                          "compare", "--head", "c27b4cbe9a0d"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    written_path = re.search(r"Generating (\S+\.py)", cli.stdout + cli.stderr).group(1)
    written = Path(written_path).read_text()
    assert body(written, "upgrade") == result.upgrade.strip()
    assert body(written, "downgrade") == result.downgrade.strip()
    if "sqlite" not in any_db_url:
        # and the statements of `alembic upgrade <head>:<new> --sql`
        new_rev = re.search(r"^revision: str = '(\w+)'", written, re.M).group(1)
        sql_cli = subprocess.run([str(Path(sys.executable).with_name("alembic")), "-c",
                                  str(root / "alembic.ini"), "upgrade",
                                  f"c27b4cbe9a0d:{new_rev}", "--sql"],
                                 capture_output=True, text=True)
        assert sql_cli.returncode == 0, sql_cli.stderr
        ours = [" ".join(s.split()) for s in result.sql.split(";") if s.strip()]
        theirs = " ".join(sql_cli.stdout.split())
        assert ours
        for statement in ours:
            assert statement in theirs, statement


def test_create_revision_then_upgrade_brings_preview_to_no_changes(make_app, tmp_path,
                                                                     monkeypatch):
    url = sqlite_url(tmp_path / 'a.db')
    root, _ = demo_copy(tmp_path, url)
    change_models_and_database(root, url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini", url)
    page = client.get("/targets/shop/preview/result").get_data(as_text=True)
    heads = re.findall(r'<option value="(\w+)">', page.split('name="head"')[1])
    response = client.post("/targets/shop/revisions", data={
        "csrf_token": csrf_from(page), "kind": "autogenerate", "message": "nickname and more",
        "head": heads[0]})
    assert response.status_code == 303
    new_rev = response.headers["Location"].rsplit("/", 1)[1]
    script = ScriptDirectory.from_config(Config(str(root / "alembic.ini")))
    assert new_rev in script.get_heads()
    assert script.get_revision(new_rev).doc == "nickname and more"
    shown = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "nickname and more" in shown
    # importable, and upgrading to it leaves nothing to autogenerate
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "heads")
    after = client.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    assert 'id="no-changes"' in after.get_data(as_text=True)


def test_empty_revision_and_merge_heads(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'm.db')
    root, _ = demo_copy(tmp_path, url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini", url)
    config = Config(str(root / "alembic.ini"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 2
    page = client.get("/targets/shop/preview/result").get_data(as_text=True)
    token = csrf_from(page)
    merged = client.post("/targets/shop/revisions", data={
        "csrf_token": token, "kind": "merge", "message": "merge reporting into main"})
    assert merged.status_code == 303
    heads = ScriptDirectory.from_config(config).get_heads()
    assert heads == [merged.headers["Location"].rsplit("/", 1)[1]]
    assert ScriptDirectory.from_config(config).get_revision(heads[0]).is_merge_point
    empty = client.post("/targets/shop/revisions", data={
        "csrf_token": token, "kind": "empty", "message": "data fix placeholder",
        "branch_label": "fixes"})
    assert empty.status_code == 303
    new = ScriptDirectory.from_config(config).get_revision(
        empty.headers["Location"].rsplit("/", 1)[1])
    assert new.down_revision == heads[0] and "fixes" in new.branch_labels
    # nothing to merge now; bad input and policy are refused
    assert client.post("/targets/shop/revisions", data={
        "csrf_token": token, "kind": "merge", "message": "again"}).status_code == 409
    for bad in ({"kind": "empty", "message": ""}, {"kind": "empty", "message": "x" * 201},
                {"kind": "empty", "message": "ok", "branch_label": "../evil"},
                {"kind": "rm -rf", "message": "ok"}):
        assert client.post("/targets/shop/revisions",
                           data={"csrf_token": token, **bad}).status_code == 400


def test_authoring_needs_policy_and_operator(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'p.db')
    ini = make_env(tmp_path / "env", linear(2))
    app, client = authoring_app(make_app, tmp_path, monkeypatch, ini, url,
                                allow_revision_authoring=False)
    token = csrf_from(client.get("/").get_data(as_text=True))
    before = sorted((tmp_path / "env" / "versions").iterdir())
    response = client.post("/targets/shop/revisions", data={
        "csrf_token": token, "kind": "empty", "message": "x"})
    assert response.status_code == 403
    add_user(app, "vic", "viewer")
    viewer = app.test_client()
    login(viewer, "vic")
    assert viewer.post("/targets/shop/revisions", data={
        "csrf_token": csrf_from(viewer.get("/").get_data(as_text=True)), "kind": "empty",
        "message": "x"}).status_code == 403
    assert sorted((tmp_path / "env" / "versions").iterdir()) == before


def test_range_download_equals_alembic_sql(make_app, tmp_path, monkeypatch, pg_url):
    ini = make_env(tmp_path / "env", linear(5))
    app, client = authoring_app(make_app, tmp_path, monkeypatch, ini, pg_url)
    response = client.get("/targets/shop/sql?from=r001&to=r004")
    assert response.status_code == 200
    assert 'attachment; filename="shop_r001_r004.sql"' in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    assert text.startswith("-- Alembic Dashboard offline SQL for target shop")
    assert "by olga" in text and "range: r001 -> r004" in text
    import io
    buffer = io.StringIO()
    config = Config(str(ini), output_buffer=buffer)
    config.set_main_option("sqlalchemy.url", pg_url)
    command.upgrade(config, "r001:r004", sql=True)

    def statements(sql):
        return [s.strip() for s in sql.split(";") if s.strip() and not s.strip().startswith("--")]
    assert statements(text.split("\n\n", 1)[1]) == statements(buffer.getvalue())
    assert client.get("/targets/shop/sql?from=nope&to=r004").status_code == 404
    assert client.get("/targets/shop/sql?from=r001&to=../../etc").status_code == 404
    # pending range from the database's current state
    config.output_buffer = None
    command.upgrade(config, "r002")
    pending = client.get("/targets/shop/pending.sql").get_data(as_text=True)
    assert "range: r002 -> heads" in pending
    assert "t_r003" in pending and "t_r001" not in pending


def test_env_errors_are_readable(make_app, tmp_path, monkeypatch, pg_url, mysql_url):
    # database does not exist
    missing = sa.engine.make_url(pg_url).set(database="adtest_nope_db").render_as_string(
        hide_password=False)
    root, _ = demo_copy(tmp_path / "a", pg_url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini", missing)
    html = client.get("/targets/shop/preview/result").get_data(as_text=True)
    assert "does not exist" in html and "Hint:" in html and "CREATE DATABASE" in html
    assert client.get("/healthz").status_code == 200
    # MySQL model with String() without a length
    ini = make_env(tmp_path / "b", [Rev("a1", None)], env_extra=(
        "import sqlalchemy as _sa\n_md = _sa.MetaData()\n"
        "_sa.Table('needs_len', _md, _sa.Column('id', _sa.Integer, primary_key=True), "
        "_sa.Column('name', _sa.String()))\ntarget_metadata = _md"))
    monkeypatch.setenv("AUTH_URL", mysql_url)
    command_config = Config(str(ini))
    command_config.set_main_option("sqlalchemy.url", mysql_url)
    command.upgrade(command_config, "head")
    app2 = make_app(write_targets_file(tmp_path / "t2.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "AUTH_URL"}}))
    add_user(app2, "vic2", "viewer")
    viewer = app2.test_client()
    login(viewer, "vic2")
    html = viewer.get("/targets/shop/preview/result").get_data(as_text=True)
    assert "VARCHAR requires a length on dialect mysql" in html and "String(255)" in html
    # env.py that raises ImportError
    ini3 = make_env(tmp_path / "c", [Rev("a1", None)], env_extra="import not_installed_app")
    app3 = make_app(write_targets_file(tmp_path / "t3.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini3), "url_env": "AUTH_URL"}}))
    add_user(app3, "vic3", "viewer")
    viewer3 = app3.test_client()
    login(viewer3, "vic3")
    response = viewer3.get("/targets/shop/preview/result")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "ModuleNotFoundError" in html
    assert "not_installed_app" in html and "Hint:" in html
    assert viewer3.get("/targets/shop").status_code == 200


def test_drift_badge(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'd.db')
    root, config = demo_copy(tmp_path, url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini", url)
    # the demo's models are one change ahead of its heads: tracking_number + its index
    assert "2 differences" in client.get("/targets/shop/drift").get_data(as_text=True)
    from webapp.services import authoring
    authoring.forget_drift("shop")
    change_models_and_database(root, url)
    assert "6 differences" in client.get("/targets/shop/drift").get_data(as_text=True)
    authoring.forget_drift("shop")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM alembic_version WHERE version_num = 'f5ae7fe1cd30'"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('e49d6ed0bc2f')"))
    engine.dispose()
    assert "not at head" in client.get("/targets/shop/drift").get_data(as_text=True)


@pytest.mark.parametrize(("rule", "bad", "good", "dialect"), [
    ("drop_table", "DROP TABLE users", "CREATE TABLE users (id INTEGER)", "postgresql"),
    ("drop_column", "ALTER TABLE users DROP COLUMN gender",
     "ALTER TABLE users ADD COLUMN gender VARCHAR(1)", "postgresql"),
    ("rename", "ALTER TABLE users RENAME TO people", "ALTER TABLE users ADD COLUMN x INT",
     "postgresql"),
    ("rename", "ALTER TABLE users RENAME COLUMN a TO b", "SELECT 1", "postgresql"),
    ("type_change", "ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(20)",
     "ALTER TABLE users ALTER COLUMN name DROP NOT NULL", "postgresql"),
    ("not_null_without_default", "ALTER TABLE users ADD COLUMN age INTEGER NOT NULL",
     "ALTER TABLE users ADD COLUMN age INTEGER DEFAULT 0 NOT NULL", "postgresql"),
    ("index_not_concurrent", "CREATE INDEX ix_a ON users (a)",
     "CREATE INDEX CONCURRENTLY ix_a ON users (a)", "postgresql"),
    ("mysql_table_copy", "ALTER TABLE users MODIFY name VARCHAR(20) NOT NULL",
     "ALTER TABLE users ADD COLUMN x INT NULL", "mysql"),
])
def test_lint_rules(rule, bad, good, dialect):
    sql = f"-- Running upgrade a1 -> b2\n\n{bad};\n"
    findings = [f for f in lint_sql(sql, dialect) if f.rule == rule]
    assert findings and findings[0].revision == "b2" and findings[0].why
    assert findings[0].statement
    assert not [f for f in lint_sql(f"{good};\n", dialect) if f.rule == rule]


def test_lint_ignores_the_version_table_and_names_revisions():
    sql = ("-- Running upgrade  -> a1\n\nCREATE TABLE t (id INT);\n\n"
           "INSERT INTO alembic_version (version_num) VALUES ('a1');\n\n"
           "-- Running downgrade b2 -> a1\n\nDROP TABLE t2;\n\n"
           "DELETE FROM alembic_version WHERE version_num = 'b2';\n")
    findings = lint_sql(sql, "postgresql")
    assert [(f.rule, f.revision) for f in findings] == [("drop_table", "b2")]


def test_plan_page_shows_lint_findings(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'l.db')
    revs = linear(2)
    revs[1].upgrade = 'op.drop_table("t_r000")'
    revs[1].downgrade = "pass"
    ini = make_env(tmp_path / "env", revs)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, ini, url)
    page = client.get("/targets/shop/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert "drop table" in page and "rule-drop_table" in page


def test_the_demo_models_are_one_change_ahead_of_its_heads(make_app, tmp_path, monkeypatch):
    """At heads, the demo's preview and drift page show the change its models
    have and no revision makes yet: a nullable column and its index."""
    url = sqlite_url(tmp_path / "at-heads.db")
    root, _ = demo_copy(tmp_path, url)
    app, client = authoring_app(make_app, tmp_path, monkeypatch, root / "alembic.ini", url)
    page = client.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.get_data(as_text=True)))
    assert "add column orders.tracking_number VARCHAR(64) NULL" in text, text[:3000]
    assert "add index ix_orders_tracking_number" in text
    script = html_lib.unescape(re.sub(r"<[^>]+>", "", page.get_data(as_text=True)))
    assert "batch_op.add_column(sa.Column('tracking_number'" in script  # SQLite: batch mode
    drift = client.get("/api/v1/targets/shop/drift").json
    assert sorted(d["kind"] for d in drift["differences"]) == ["add_column", "add_index"]
    assert not any(d["destructive"] for d in drift["differences"])
    differences = client.get("/targets/shop/drift/differences").get_data(as_text=True)
    assert "orders.tracking_number" in differences and "not-at-head" not in differences


def test_preview_of_a_database_behind_head_says_what_to_do(logged_in):
    html = logged_in.get("/targets/demo-staging/preview/result",
                         headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "Target database is not up to date" in html
    assert "Hint:" in html and "upgrade the target to its head(s) first" in html
