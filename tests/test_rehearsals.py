"""Rehearsals (dry runs) on a scratch copy of the target's schema: per-revision
timings, the failing revision and statement, the result attached to the plan
and to the approval request — and the real database never touched, on
SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import sqlalchemy as sa
from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import tables, token_headers, version_table

from webapp.core.runner import run_command
from webapp.core.targets import load_targets

FAILING = 'op.execute("INSERT INTO no_such_table (id) VALUES (1)")'


def revisions() -> list[Rev]:
    """r000 creates t_r000; r001 adds t_r001 with a foreign key to it; r002 fails."""
    fk = ('op.create_table("t_r001", sa.Column("id", sa.Integer, primary_key=True), '
          'sa.Column("parent", sa.Integer, sa.ForeignKey("t_r000.id")))')
    return [Rev("r000", None), Rev("r001", "r000", upgrade=fk),
            Rev("r002", "r001", upgrade=FAILING, downgrade="pass")]


def text(response) -> str:
    return re.sub(r"<[^>]+>", "", response.get_data(as_text=True))


def scratch_databases(url: str) -> list[str]:
    """Databases/schemas on the server of ``url`` named like its rehearsal copies."""
    parsed = sa.engine.make_url(url)
    prefix = f"{parsed.database[:40]}_rehearsal_"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if parsed.get_backend_name() == "postgresql":
                names = conn.execute(sa.text("SELECT datname FROM pg_database")).scalars()
            else:
                names = conn.execute(sa.text("SHOW DATABASES")).scalars()
            return [n for n in names if n.startswith(prefix)]
    finally:
        engine.dispose()


def setup(make_app, tmp_path, monkeypatch, url: str, **policy):
    ini = make_env(tmp_path / "env", revisions())
    monkeypatch.setenv("REHEARSE_URL", url)
    spec = {"tier": "staging", "alembic_ini": str(ini), "url_env": "REHEARSE_URL"}
    if policy:
        spec["policy"] = policy
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": spec})
    # the real database starts at r000, with its table
    run_command(load_targets(targets)["shop"], "upgrade", "r000", url=url)
    assert version_table(url) == {"r000"}
    app = make_app(targets)
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    return app, client


def test_rehearsal_on_every_dialect_never_touches_the_real_database(
        make_app, tmp_path, monkeypatch, any_db_url):
    app, client = setup(make_app, tmp_path, monkeypatch, any_db_url)
    before = tables(any_db_url)
    assert before == {"alembic_version", "t_r000"}

    plan = client.get("/targets/shop/plan?command=upgrade&revision=r001")
    html = plan.get_data(as_text=True)
    assert plan.status_code == 200 and "Not rehearsed" in html
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', html).group(1)
    posted = client.post("/targets/shop/rehearsals", data={
        "csrf_token": csrf_from(html), "command": "upgrade", "revision": "r001",
        "plan_hash": plan_hash})
    assert posted.status_code == 303, text(posted)[-2000:]
    shown = text(client.get("/targets/shop/plan?command=upgrade&revision=r001"))
    assert "Rehearsed OK on" in shown and "1 step in" in shown, shown[-3000:]
    assert ("on a copy of the SQLite file." in shown or "scratch schema built from SHOW CREATE"
            in shown or "pg_dump --schema-only." in shown), shown[-3000:]

    # the failing revision and its statement, through the API
    headers = token_headers(app, "pipeline", "operator")
    failed = app.test_client().post("/api/v1/targets/shop/rehearsals",
                         json={"command": "upgrade", "revision": "heads"}, headers=headers)
    assert failed.status_code == 201, failed.json
    result = failed.json
    assert result["passed"] is False and result["failed_revision"] == "r002"
    assert "no_such_table" in result["failing_statement"]
    assert [s["revision"] for s in result["steps"]] == ["r001"]
    assert result["steps"][0]["seconds"] >= 0 and result["started_at"] == ["r000"]
    page = text(client.get("/targets/shop/plan?command=upgrade&revision=heads"))
    assert "Rehearsal failed" in page and "r002" in page and "no_such_table" in page

    # the real database: same revision, same tables; no scratch copy left behind
    assert version_table(any_db_url) == {"r000"}
    assert tables(any_db_url) == before
    if not any_db_url.startswith("sqlite"):
        assert scratch_databases(any_db_url) == []
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import AuditEvent
        outcomes = [e.outcome for e in db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "rehearsal"))]
    assert outcomes == ["passed", "failed"]


def test_rehearsal_stops_an_env_py_that_picks_its_own_database(make_app, tmp_path,
                                                               monkeypatch):
    """env.py pointing at the real database instead of the scratch copy: the
    rehearsal is stopped before connecting and the real file stays as it was."""
    own_url = '''
if os.environ.get("APP_DATABASE_URL"):
    config.set_main_option("sqlalchemy.url", os.environ["APP_DATABASE_URL"])
'''
    ini = make_env(tmp_path / "env", revisions(), env_extra=own_url)
    real = tmp_path / "real.db"
    url = sqlite_url(real)
    monkeypatch.setenv("OWN_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"own": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "OWN_URL",
        "env": {"APP_DATABASE_URL": url}}})
    app = make_app(targets)
    headers = token_headers(app, "pipeline", "operator")
    digest = hashlib.sha256(Path(real).read_bytes()).hexdigest()
    response = app.test_client().post("/api/v1/targets/own/rehearsals",
                                      json={"command": "upgrade", "revision": "r001"},
                                      headers=headers)
    assert response.status_code == 201, response.json
    assert response.json["passed"] is False and response.json["failed_revision"] is None
    assert "nothing was run" in response.json["error"]
    assert hashlib.sha256(Path(real).read_bytes()).hexdigest() == digest
    assert version_table(url) == set()


def test_rehearsal_rights_and_the_request_page(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "real.db")
    app, client = setup(make_app, tmp_path, monkeypatch, url, approvals_required=1)
    api = app.test_client()  # bearer tokens only, no session cookie
    viewer = token_headers(app, "vera", "viewer")
    denied = api.post("/api/v1/targets/shop/rehearsals",
                         json={"command": "upgrade", "revision": "r001"}, headers=viewer)
    assert denied.status_code == 403 and denied.json["error"] == "role"
    operator = token_headers(app, "pipeline", "operator")
    for bad, code in (({"command": "upgrade"}, 400),
                      ({"command": "upgrade", "revision": "nope"}, 404),
                      ({"command": "upgrade", "revision": "r000"}, 409)):
        answer = api.post("/api/v1/targets/shop/rehearsals", json=bad, headers=operator)
        assert answer.status_code == code, (bad, answer.json)
    # a protected target: the request for this plan shows its rehearsal
    requested = api.post("/api/v1/targets/shop/jobs", headers=operator,
                            json={"command": "upgrade", "revision": "r001"})
    assert requested.status_code == 202 and "request" in requested.json
    page = client.get(f"/requests/{requested.json['request']}")
    assert "Not rehearsed" in text(page)
    html = page.get_data(as_text=True)
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', html).group(1)
    posted = client.post("/targets/shop/rehearsals", data={
        "csrf_token": csrf_from(html), "command": "upgrade", "revision": "r001",
        "plan_hash": plan_hash, "request_id": str(requested.json["request"])})
    assert posted.status_code == 303
    assert posted.headers["Location"].endswith(f"/requests/{requested.json['request']}#rehearsal")
    assert "Rehearsed OK on" in text(client.get(posted.headers["Location"]))
    assert version_table(url) == {"r000"}
