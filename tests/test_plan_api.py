"""``GET /api/v1/targets/<name>/plan``: steps, SQL, lint and the forecast in
its fixed shape — SQLite batch operations forecast as table rebuilds,
PostgreSQL statements with their lock mode — and the plan page's permission."""

from __future__ import annotations

import pytest
from support.common import add_user, login
from support.envtools import Rev, make_env, write_targets_file

FORECAST_KEYS = {"revision", "statement", "table", "rows", "bytes", "lock", "blocks",
                 "rewrites", "blockers"}

REVISIONS = [
    Rev("r000", None, upgrade='op.create_table("items", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("name", sa.String(50)))'),
    Rev("r001", "r000", "alter in batch", upgrade='with op.batch_alter_table("items", '
        'recreate="always") as b: b.alter_column("name", existing_type=sa.String(50), '
        'nullable=False)'),
    Rev("r002", "r001", "index", upgrade='op.create_index("ix_items_name", "items", ["name"])'),
]


#: the same on PostgreSQL without batch mode (batch mode there needs a live table)
PG_REVISIONS = [REVISIONS[0], Rev("r001", "r000", "not null", upgrade='op.alter_column('
                '"items", "name", existing_type=sa.String(50), nullable=False)'), REVISIONS[2]]


def _client(make_app, tmp_path, monkeypatch, url: str, role: str = "operator",
            revisions=REVISIONS):
    ini = make_env(tmp_path / "env", revisions)
    monkeypatch.setenv("PLAN_API_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "PLAN_API_URL"}})
    app = make_app(targets)
    add_user(app, "olga", role)
    client = app.test_client()
    login(client, "olga")
    return client


def test_plan_api_on_sqlite_forecasts_batch_rebuilds(make_app, tmp_path, monkeypatch):
    (tmp_path / "t.db").touch()
    client = _client(make_app, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}")
    response = client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert [s["revision"] for s in body["steps"]] == ["r000", "r001", "r002"]
    assert "CREATE TABLE items" in body["sql"] and isinstance(body["lint"], list)
    assert body["forecast"] and all(set(line) == FORECAST_KEYS for line in body["forecast"])
    rebuilds = [line for line in body["forecast"] if line["revision"] == "r001"]
    assert [(r["table"], r["lock"], r["rewrites"], r["blocks"]) for r in rebuilds] == [
        ("items", "table rebuild (batch mode)", "rewrite", "reads and writes")]


def test_plan_api_refuses_bad_input_and_viewers(make_app, tmp_path, monkeypatch):
    (tmp_path / "t.db").touch()
    client = _client(make_app, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}",
                     role="viewer")
    assert client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads"
                      ).status_code == 403  # the plan page needs the operator role too
    assert client.get("/api/v1/targets/nope/plan?command=upgrade&revision=heads"
                      ).status_code == 404
    bad = client.get("/api/v1/targets/shop/plan?command=drop&revision=heads")
    assert bad.status_code in (400, 403)


@pytest.mark.postgresql
def test_plan_api_on_postgresql_gives_lock_modes(make_app, tmp_path, monkeypatch, pg_url):
    client = _client(make_app, tmp_path, monkeypatch, pg_url, revisions=PG_REVISIONS)
    response = client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    by_revision = {line["revision"]: line for line in body["forecast"]}
    assert by_revision["r002"]["lock"] == "SHARE" and by_revision["r002"]["table"] == "items"
    assert by_revision["r002"]["blocks"] == "writes"
    assert by_revision["r001"]["lock"] == "ACCESS EXCLUSIVE"
    assert by_revision["r001"]["rewrites"] == "scan"  # SET NOT NULL scans the table


def test_plan_page_shows_the_forecast_and_the_worst_line(make_app, tmp_path, monkeypatch):
    (tmp_path / "t.db").touch()
    client = _client(make_app, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}")
    page = client.get("/targets/shop/plan?command=upgrade&revision=heads")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="forecast"' in html and "table rebuild (batch mode)" in html
    worst = html.split('id="forecast-worst"', 1)[1].split("</p>", 1)[0]
    assert "table rebuild (batch mode)" in worst and "items" in worst
    assert "reads and writes" in worst


@pytest.mark.postgresql
def test_forecast_reads_rows_size_and_blockers_live(make_app, tmp_path, monkeypatch, pg_url):
    import sqlalchemy as sa

    client = _client(make_app, tmp_path, monkeypatch, pg_url, revisions=PG_REVISIONS)
    from webapp.core.runner import run_command
    from webapp.core.targets import load_targets

    run_command(load_targets(tmp_path / "targets.toml")["shop"], "upgrade", "r000", url=pg_url)
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items (id, name) SELECT g, 'n' || g "
                             "FROM generate_series(1, 2000) g"))
        conn.execute(sa.text("ANALYZE items"))
    holder = engine.connect()
    try:
        holder.execute(sa.text("SELECT count(*) FROM items"))  # idle in transaction now
        pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        body = client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads").get_json()
        line = next(x for x in body["forecast"] if x["revision"] == "r001")
        assert line["table"] == "items" and line["rows"] == 2000 and line["bytes"] > 0
        assert [b["pid"] for b in line["blockers"]] == [pid]
        assert line["blockers"][0]["state"] == "idle in transaction"
        page = client.get("/targets/shop/plan?command=upgrade&revision=heads")
        assert f"pid {pid}" in page.get_data(as_text=True)
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


#: on MariaDB: a VARCHAR extension within its length class (instant only when
#: the live column is known), and an index
MYSQL_REVISIONS = [REVISIONS[0], Rev("r001", "r000", "wider", upgrade='op.alter_column('
                   '"items", "name", existing_type=sa.String(50), type_=sa.String(60), '
                   'existing_nullable=True)'), REVISIONS[2]]


def test_forecast_on_mariadb_reads_the_server_version_columns_and_blockers(
        make_app, tmp_path, monkeypatch, mysql_url):
    import sqlalchemy as sa

    from webapp.core.forecast import forecast_sql
    from webapp.core.runner import run_command
    from webapp.core.targets import load_targets

    client = _client(make_app, tmp_path, monkeypatch, mysql_url, revisions=MYSQL_REVISIONS)
    run_command(load_targets(tmp_path / "targets.toml")["shop"], "upgrade", "r000",
                url=mysql_url)
    engine = sa.create_engine(mysql_url)
    holder = engine.connect()
    try:
        holder.execute(sa.text("SELECT count(*) FROM items"))  # an open transaction, idle
        pid = holder.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
        body = client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads").get_json()
        by_revision = {line["revision"]: line for line in body["forecast"]}
        assert set(by_revision["r001"]) == FORECAST_KEYS
        # the SQL alone cannot tell an extension from a type change: COPY
        offline = forecast_sql(body["sql"], "mysql")
        assert next(x for x in offline if x["revision"] == "r001")["lock"] == \
            "ALGORITHM=COPY, LOCK=SHARED"
        assert by_revision["r001"]["lock"] == "ALGORITHM=INSTANT, LOCK=NONE"
        assert by_revision["r001"]["blocks"] == "nothing"
        assert by_revision["r002"]["lock"] == "ALGORITHM=INPLACE, LOCK=NONE"
        assert by_revision["r002"]["rewrites"] == "scan"
        assert by_revision["r002"]["rows"] == 0 and by_revision["r002"]["bytes"] > 0
        # (another session of the schema may show too: an open transaction of
        # this test's dashboard, e.g. its status read, on a loaded machine)
        (held,) = [b for b in by_revision["r002"]["blockers"] if b["pid"] == pid]
        assert held["state"] == "idle in transaction"
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()


def test_mariadb_blockers_name_a_running_mysqldump_read(mysql_url):
    """A session reading as mysqldump does (``SELECT /*!40001 SQL_NO_CACHE */``)
    is a blocker of every table read; the reader's own session is not."""
    import threading

    import sqlalchemy as sa

    from webapp.agent.alembic_dashboard_agent.table_stats import _mysql as mysql_stats

    engine = sa.create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("CREATE TABLE items (id INT PRIMARY KEY)"))
    dump = engine.connect()
    pid = dump.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
    reading = threading.Thread(target=dump.execute, args=(sa.text(
        "SELECT /*!40001 SQL_NO_CACHE */ SLEEP(3) FROM (SELECT 1) x"),), daemon=True)
    reading.start()
    try:
        with engine.connect() as conn:
            for _ in range(50):  # until the server shows the read (at most 5 s)
                stats = mysql_stats(conn, ["items"])
                if stats["tables"]["items"]["blockers"]:
                    break
                threading.Event().wait(0.1)
        blockers = stats["tables"]["items"]["blockers"]
        assert [b["pid"] for b in blockers] == [pid], blockers
        assert "SQL_NO_CACHE" in blockers[0]["query"]
    finally:
        reading.join(10)
        dump.close()
        engine.dispose()
