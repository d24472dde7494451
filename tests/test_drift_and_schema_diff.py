"""Drift you can open and schema comparison between targets (issue 20,
item 4): ``GET /api/v1/targets/<name>/drift`` lists what autogenerate would
change, also when the database is not at head; ``GET
/api/v1/targets/<a>/schema-diff?against=<b>`` compares two live schemas,
across SQLite, MariaDB and PostgreSQL without the usual false alarms."""

from __future__ import annotations

from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers

from webapp.core.runner import run_command

# a table with the spellings that differ per dialect: server defaults
# (now(), true, '0'), a native/non-native enum, a boolean, a foreign key
# (MariaDB adds an index for it), a unique constraint, a partial-free index
ORDERS = '''

def create_orders():
    op.create_table(
        "customers", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(120), nullable=False, unique=True))
    op.create_table(
        "orders", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.Integer, sa.ForeignKey("customers.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("status", sa.Enum("new", "paid", "shipped", name="order_status"),
                  server_default="new", nullable=False),
        sa.Column("paid", sa.Boolean, server_default=sa.true(), nullable=False),
        sa.Column("items", sa.Integer, server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime, server_default=sa.func.now()),
        sa.Column("note", sa.Text))
    op.create_index("ix_orders_created_at", "orders", ["created_at"])


def drop_orders():
    op.drop_table("orders")
    op.drop_table("customers")
    sa.Enum(name="order_status").drop(op.get_bind(), checkfirst=True)
'''

MODELS = '''
import sqlalchemy as sa
target_metadata = sa.MetaData()
sa.Table("t_r000", target_metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.String(50)), sa.Column("email", sa.String(120)))
'''


def orders_env(root):
    return make_env(root, [Rev("r000", None, "customers and orders", upgrade="create_orders()",
                               downgrade="drop_orders()", extra_source=ORDERS),
                           Rev("r001", "r000")])


def app_with(make_app, tmp_path, monkeypatch, targets: dict):
    spec = {}
    for name, (ini, url) in targets.items():
        monkeypatch.setenv(f"URL_{name.upper()}", url)
        spec[name] = {"tier": "staging", "alembic_ini": str(ini),
                      "url_env": f"URL_{name.upper()}"}
    return make_app(write_targets_file(tmp_path / "targets.toml", spec))


def test_drift_lists_the_differences_even_when_not_at_head(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000")],
                   env_extra=MODELS)
    url = sqlite_url(tmp_path / "t.db")
    app = app_with(make_app, tmp_path, monkeypatch, {"shop": (ini, url)})
    target = app.extensions["alembic_dashboard"].get("shop")
    run_command(target, "upgrade", "r000", url=url)
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    answer = client.get("/api/v1/targets/shop/drift")
    assert answer.status_code == 200, answer.json
    assert answer.json["current"] == ["r000"] and answer.json["at_head"] is False
    texts = [d["text"] for d in answer.json["differences"]]
    assert texts == ["add column t_r000.email VARCHAR(120) NULL"], texts
    assert set(answer.json["differences"][0]) == {"kind", "text", "destructive", "why"}
    # the pending revision's table is not in the models: drift names it too, once applied
    run_command(target, "upgrade", "head", url=url)
    answer = client.get("/api/v1/targets/shop/drift").json
    assert answer["at_head"] is True
    assert sorted(d["kind"] for d in answer["differences"]) == ["add_column", "remove_table"]
    (removed,) = [d for d in answer["differences"] if d["kind"] == "remove_table"]
    assert removed["text"] == "drop table t_r001" and removed["destructive"]


def test_drift_without_models_or_target_says_why(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    app = app_with(make_app, tmp_path, monkeypatch,
                   {"shop": (ini, sqlite_url(tmp_path / "t.db"))})
    headers = token_headers(app, "vic", "viewer")
    client = app.test_client()
    answer = client.get("/api/v1/targets/shop/drift", headers=headers)
    assert answer.status_code == 409 and answer.json["error"] == "unreadable"
    assert "target_metadata" in answer.json["detail"]
    assert client.get("/api/v1/targets/nope/drift", headers=headers).status_code == 404


def test_schema_diff_across_dialects_has_no_false_alarms(make_app, tmp_path, monkeypatch,
                                                         mysql_url, pg_url):
    ini = orders_env(tmp_path / "env")
    urls = {"lite": sqlite_url(tmp_path / "lite.db"), "maria": mysql_url, "pg": pg_url}
    app = app_with(make_app, tmp_path, monkeypatch,
                   {name: (ini, url) for name, url in urls.items()})
    catalog = app.extensions["alembic_dashboard"]
    for name, url in urls.items():
        run_command(catalog.get(name), "upgrade", "head", url=url)
    headers = token_headers(app, "vic", "viewer")
    client = app.test_client()
    for a, b in (("lite", "maria"), ("lite", "pg"), ("maria", "pg"), ("pg", "lite")):
        answer = client.get(f"/api/v1/targets/{a}/schema-diff?against={b}", headers=headers)
        assert answer.status_code == 200, answer.json
        assert answer.json["differences"] == [], (a, b, answer.json["differences"])
    # a real difference: one target a revision behind, another with a column changed by hand
    run_command(catalog.get("pg"), "downgrade", "-1", url=urls["pg"])
    import sqlalchemy as sa

    engine = sa.create_engine(mysql_url)
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE orders MODIFY note VARCHAR(200) NOT NULL "
                                   "DEFAULT ''"))
    engine.dispose()
    found = client.get("/api/v1/targets/lite/schema-diff?against=pg", headers=headers).json
    kinds = [(d["kind"], d["object"]) for d in found["differences"]]
    assert kinds == [("drop_table", "t_r001"), ("version", "alembic_version")], kinds
    assert found["differences"][-1]["before"] == ["r001"]
    assert found["differences"][-1]["after"] == ["r000"]
    found = client.get("/api/v1/targets/lite/schema-diff?against=maria", headers=headers).json
    (note,) = found["differences"]
    assert note["kind"] == "alter_column" and note["object"] == "orders.note"
    assert "type TEXT → VARCHAR(200)" in note["text"] and "nullable True → False" in note["text"]
    assert found["dialects"] == ["sqlite", "mysql"]


def test_schema_diff_input_and_roles(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    app = app_with(make_app, tmp_path, monkeypatch, {
        "a": (ini, sqlite_url(tmp_path / "a.db")), "b": (ini, sqlite_url(tmp_path / "b.db"))})
    headers = token_headers(app, "vic", "viewer")
    client = app.test_client()
    missing = client.get("/api/v1/targets/a/schema-diff", headers=headers)
    assert missing.status_code == 400 and missing.json["error"] == "bad_input"
    unknown = client.get("/api/v1/targets/a/schema-diff?against=zzz", headers=headers)
    assert unknown.status_code == 404
    same = client.get("/api/v1/targets/a/schema-diff?against=b", headers=headers)
    assert same.status_code == 200 and same.json["differences"] == []
    assert client.get("/api/v1/targets/a/schema-diff?against=b").status_code in (302, 401)


def test_drift_and_schema_diff_pages(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000")],
                   env_extra=MODELS)
    urls = {"a": sqlite_url(tmp_path / "a.db"), "b": sqlite_url(tmp_path / "b.db")}
    app = app_with(make_app, tmp_path, monkeypatch, {n: (ini, u) for n, u in urls.items()})
    catalog = app.extensions["alembic_dashboard"]
    run_command(catalog.get("a"), "upgrade", "r000", url=urls["a"])
    run_command(catalog.get("b"), "upgrade", "head", url=urls["b"])
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    page = client.get("/targets/a/drift/differences").get_data(as_text=True)
    assert 'class="warning not-at-head"' in page
    assert "add column t_r000.email VARCHAR(120) NULL" in page
    form = client.get("/targets/a/schema-diff").get_data(as_text=True)
    assert '<option value="b"' in form and "From a to b" not in form
    compared = client.get("/targets/a/schema-diff?against=b").get_data(as_text=True)
    assert "From a to b" in compared and "add table t_r001" in compared
    assert "alembic_version r000 → r001" in compared
    assert client.get("/targets/a/schema-diff?against=nope").status_code == 404
