"""Pages render the real state of real Alembic environments and databases."""

from __future__ import annotations

import re

import pytest
from support.common import add_user, login
from support.envtools import Rev, branched, linear, make_env, sqlite_url, write_targets_file

from webapp.core.demo import DEMO_START, DEMO_TARGETS_FILE
from webapp.core.runner import run_command

DEMO_INI = DEMO_TARGETS_FILE.parent / "demo" / "alembic.ini"


def text(response) -> str:
    return response.get_data(as_text=True)


def test_dashboard_cards_show_demo_state(logged_in):
    page = text(logged_in.get("/"))
    assert 'data-target="demo-staging"' in page and 'data-target="demo-production"' in page
    assert "hx-get=\"/targets/demo-staging/card\"" in page
    card = text(logged_in.get("/targets/demo-staging/card"))
    assert "tier-staging" in card
    assert DEMO_START["demo-staging"] in card
    assert "add shipping address to orders" in card  # current revision's message
    assert "<strong>5</strong> pending" in card
    assert "2 heads" in card  # the demo has a labelled second branch
    prod = text(logged_in.get("/targets/demo-production/card"))
    assert "tier-production" in prod and "protected" in prod and "<strong>10</strong>" in prod


def test_target_page_lists_pending_in_apply_order(logged_in):
    page = text(logged_in.get("/targets/demo-staging"))
    pending = page.split('class="revlist pending"')[1].split("</ol>")[0]
    order = re.findall(r"/revisions/([0-9a-f]{12})", pending)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(DEMO_INI)))
    expected = [s.revision[:12] for s in reversed(list(script.revision_map.iterate_revisions(
        "heads", (DEMO_START["demo-staging"],), implicit_base=True)))]
    assert order == expected and len(order) == 5
    assert "Recent history" in page


def test_history_page_marks_graph_and_state(logged_in):
    page = text(logged_in.get("/targets/demo-staging/history"))
    rows = re.findall(r'<tr id="rev-(\w+)" class="(\w*)"', page)
    assert len(rows) == 15
    state = dict(rows)
    assert state["a05f2a9c7eb9"] == "current"
    assert state["1f3a9c2e7b10"] == "applied" and state["9c4e1f8b6da8"] == "applied"
    assert state["c27b4cbe9a0d"] == "pending" and state["d38c5dcfab1e"] == "pending"
    assert page.count('<svg class="graph"') == 15
    for marker in ("branch point", "merge point", ">head<", ">base<", "(reporting)"):
        assert marker in page
    assert "5e0a7b4d2f64" in page.split('id="rev-e49d6ed0bc2f"')[1].split("</tr>")[0]  # depends_on


def test_revision_page_source_and_offline_sql(logged_in):
    page = text(logged_in.get("/targets/demo-staging/revisions/9c4e1f8b6da8"))
    assert "merge catalog and customer branches" in page
    assert 'class="highlight"' in page and "down_revision" in page
    sql = text(logged_in.get("/targets/demo-staging/revisions/4d9f6a3c1e53/sql",
                             headers={"HX-Request": "true"}))
    assert 'id="sql-upgrade"' in sql and 'id="sql-downgrade"' in sql
    assert "CREATE" in sql and "orders" in sql and "DROP" in sql
    assert "<html" not in sql  # htmx gets the fragment only
    full = logged_in.get("/targets/demo-staging/revisions/4d9f6a3c1e53/sql")
    assert "<html" in text(full) and "HX-Request" in full.headers["Vary"]


@pytest.mark.parametrize("url", [
    "/targets/nope", "/targets/nope/history", "/targets/demo-staging/revisions/ffffffffffff",
    "/targets/demo-staging/revisions/..%2F..%2Fetc%2Fpasswd",
    "/targets/demo-staging/revisions/'%3B%20DROP%20TABLE%20users",
    "/targets/demo-staging/revisions/" + "a" * 10000,
])
def test_unknown_target_or_revision_is_404(logged_in, url):
    response = logged_in.get(url)
    assert response.status_code == 404
    assert "404" in text(response) and "Traceback" not in text(response)


def _app_for(make_app, tmp_path, monkeypatch, ini, url, name="t"):
    monkeypatch.setenv("PAGE_TEST_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {
        name: {"tier": "staging", "alembic_ini": str(ini), "url_env": "PAGE_TEST_URL"}})
    app = make_app(targets)
    add_user(app, "alice", "viewer")
    client = app.test_client()
    login(client, "alice")
    return app, client


def test_pages_on_every_dialect(make_app, tmp_path, monkeypatch, any_db_url):
    """Card, history and revision SQL on SQLite, MariaDB and PostgreSQL."""
    app, client = _app_for(make_app, tmp_path, monkeypatch, DEMO_INI, any_db_url, "shop")
    target = app.extensions["alembic_dashboard"].get("shop")
    run_command(target, "upgrade", "8b3d0e7a5c97", url=any_db_url)
    card = text(client.get("/targets/shop/card"))
    assert "8b3d0e7a5c97" in card and "unreachable" not in card
    history = text(client.get("/targets/shop/history"))
    assert 'id="rev-8b3d0e7a5c97" class="current"' in history
    assert 'id="rev-6f1b8c5e3a75" class="pending"' in history  # other side of the branch
    sql = text(client.get("/targets/shop/revisions/1f3a9c2e7b10/sql",
                          headers={"HX-Request": "true"}))
    dialect = any_db_url.split(":")[0]
    plain = re.sub(r"<[^>]+>", "", sql)
    if dialect.startswith("mysql"):
        assert "AUTO_INCREMENT" in plain
    elif dialect.startswith("postgresql"):
        assert "SERIAL" in plain
    else:
        assert "CREATE TABLE users" in plain
    assert "Offline SQL could not be generated" not in plain


def test_broken_revision_file_shows_error_not_500(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(3))
    (tmp_path / "env" / "versions" / "zz_broken.py").write_text("revision = 'x'\nif True\n")
    app, client = _app_for(make_app, tmp_path, monkeypatch, ini, f"sqlite:///{tmp_path}/t.db")
    for url in ("/targets/t", "/targets/t/history", "/targets/t/card"):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "zz_broken.py, line 2: syntax error" in text(response)
    api = client.get("/api/v1/targets/t/history")
    assert api.status_code == 409 and "zz_broken.py" in api.json["detail"]


def test_env_py_import_error_shows_hint(make_app, tmp_path, monkeypatch):
    revs = linear(2)
    ini = make_env(tmp_path / "env", revs, env_extra="import myapp.models  # noqa")
    app, client = _app_for(make_app, tmp_path, monkeypatch, ini, f"sqlite:///{tmp_path}/t.db")
    assert client.get("/targets/t/history").status_code == 200  # history needs no import
    sql = text(client.get("/targets/t/revisions/r001/sql", headers={"HX-Request": "true"}))
    assert "ModuleNotFoundError" in sql and "No module named" in sql
    assert "Hint:" in sql and "sys.path" in sql


def test_mysql_varchar_without_length_shows_hint(make_app, tmp_path, monkeypatch, mysql_url):
    revs = [Rev("a1", None, upgrade='op.create_table("t", sa.Column("name", sa.String()))')]
    ini = make_env(tmp_path / "env", revs)
    app, client = _app_for(make_app, tmp_path, monkeypatch, ini, mysql_url)
    sql = text(client.get("/targets/t/revisions/a1/sql", headers={"HX-Request": "true"}))
    assert "VARCHAR requires a length on dialect mysql" in sql
    assert "String(255)" in sql  # the hint


def test_multiple_heads_warning_and_branches(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", branched())
    app, client = _app_for(make_app, tmp_path, monkeypatch, ini, f"sqlite:///{tmp_path}/t.db")
    page = text(client.get("/targets/t"))
    assert "unreachable" in page.lower()  # the SQLite file does not exist yet
    assert "2 heads" in page
    history = text(client.get("/targets/t/history"))
    assert history.count('<svg class="graph"') == 9


def test_history_cache_refreshes_when_a_file_is_added(make_app, tmp_path, monkeypatch):
    from support.envtools import write_revision

    root = tmp_path / "env"
    ini = make_env(root, linear(2))
    app, client = _app_for(make_app, tmp_path, monkeypatch, ini, f"sqlite:///{tmp_path}/t.db")
    assert 'id="rev-r002"' not in text(client.get("/targets/t/history"))
    write_revision(root, Rev("r002", "r001", message="added later"))
    page = text(client.get("/targets/t/history"))
    assert 'id="rev-r002"' in page and "added later" in page


def test_unreachable_card_is_fast_and_does_not_slow_the_others(make_app, tmp_path,
                                                               monkeypatch):
    import socket
    import time

    # a "server" on loopback that accepts connections and never answers, like
    # a database host behind a dead firewall rule
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    ini = make_env(tmp_path / "env", linear(2))
    monkeypatch.setenv("DOWN_DB_URL", f"postgresql+psycopg://app:pw-sEcReT-1@127.0.0.1:{port}/x")
    monkeypatch.setenv("UP_DB_URL", sqlite_url(tmp_path / 'up.db'))
    import sqlalchemy as sa
    sa.create_engine(sqlite_url(tmp_path / 'up.db')).connect().close()
    targets = write_targets_file(tmp_path / "targets.toml", {
        "down": {"tier": "production", "alembic_ini": str(ini), "url_env": "DOWN_DB_URL"},
        "up": {"tier": "staging", "alembic_ini": str(ini), "url_env": "UP_DB_URL"}})
    app = make_app(targets)
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    silent.setblocking(False)

    def connections_tried() -> int:
        """Connections the pages opened to the silent host since last asked."""
        tried = 0
        while True:
            try:
                conn, _ = silent.accept()
            except BlockingIOError:
                return tried
            conn.close()
            tried += 1

    assert client.get("/").status_code == 200
    assert connections_tried() == 0  # the page itself opens no database connection
    started = time.monotonic()
    card = text(client.get("/targets/down/card"))
    elapsed = time.monotonic() - started
    assert connections_tried() >= 1  # the card asked the silent host ...
    # ... and gave up after the 2 s connect timeout, not the driver's default
    # (none: it would wait for good); 10 s leaves room for a loaded machine
    assert elapsed < 10, elapsed
    assert "unreachable" in card and "connection timeout expired" in card
    assert "ConnectionTimeout" in card  # the driver's error class (an OperationalError)
    assert "pw-sEcReT-1" not in card
    up = text(client.get("/targets/up/card"))
    assert "unreachable" not in up and connections_tried() == 0
    silent.close()
