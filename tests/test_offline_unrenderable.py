"""Revisions that inspect the database (issue 22, item 1).

A migration written to work on existing and fresh databases alike checks
what is there first (``sa.inspect(op.get_bind())``), and a data migration
opens an ORM session on ``op.get_bind()``. Neither can render in offline
mode (``NoInspectionAvailable``; ``'MockConnection' object has no attribute
'close'``), yet both run fine online. The plan page used to answer 422; now
it shows the plan — the SQL captured from a rehearsal on a scratch copy
(SQLite), or a note and the revision's source (PostgreSQL) — lint says which
revision it could not see, and the plan can be confirmed and runs.
"""

from __future__ import annotations

import html as html_lib
import re

from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import tables, token_headers, version_table, wait_job

UNSEEN_NOTE = "this revision's SQL cannot be shown before it runs (it inspects the database)"

INSPECTS = ('if "t" not in sa.inspect(op.get_bind()).get_table_names(): '
            'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True), '
            'sa.Column("name", sa.String(50)))')
SESSION_DOWNGRADE = ('orm.Session(bind=op.get_bind()).execute(sa.text("DELETE FROM t_r002")); '
                     'op.drop_table("t_r002")')


def _revisions() -> list[Rev]:
    """r000 (plain) <- r001 (creates t only when missing: inspects) <- r002
    (plain upgrade; its downgrade deletes rows through an ORM session)."""
    return [
        Rev("r000", None, "plain first"),
        Rev("r001", "r000", "create t unless it exists", upgrade=INSPECTS,
            downgrade='op.drop_table("t")'),
        Rev("r002", "r001", "plain third, session downgrade", downgrade=SESSION_DOWNGRADE,
            extra_source="from sqlalchemy import orm\n"),
    ]


def _app(make_app, tmp_path, monkeypatch, url):
    monkeypatch.setenv("INSPECT_URL", url)
    ini = make_env(tmp_path / "env", _revisions())
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "INSPECT_URL"}}))
    add_user(app, "olga", "admin")
    client = app.test_client()
    login(client, "olga")
    return app, client


def _plan_page(client, command: str, revision: str) -> str:
    page = client.get("/targets/shop/plan", query_string={"command": command,
                                                          "revision": revision})
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text[-2000:]
    assert "MockConnection" not in text.split('id="plan"')[0]  # not an error page
    return text


def _confirm(client, page: str, command: str, revision: str) -> dict:
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', page).group(1)
    response = client.post("/targets/shop/jobs", data={
        "csrf_token": csrf_from(page), "command": command, "revision": revision,
        "plan_hash": plan_hash})
    assert response.status_code == 303, response.get_data(as_text=True)[-2000:]
    job_id = int(response.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    return wait_job(client, job_id)


def _step_order(page: str) -> list[str]:
    """Revision ids of the plan's step list, in order."""
    steps = re.search(r'<ol class="revlist plan-steps">(.*?)</ol>', page, re.S).group(1)
    return re.findall(r"<li>.*?\b(r00\d)\b", steps, re.S)


def _text(page: str) -> str:
    return html_lib.unescape(re.sub(r"<[^>]+>", "", page))


def test_sqlite_plan_captures_the_sql_from_a_rehearsal_and_runs(make_app, tmp_path,
                                                                monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    app, client = _app(make_app, tmp_path, monkeypatch, url)

    page = _plan_page(client, "upgrade", "head")
    text = _text(page)
    # Every revision in order, r001's SQL captured from a rehearsal on a copy.
    assert _step_order(page) == ["r000", "r001", "r002"]
    assert "CREATE TABLE t (" in text and "CREATE TABLE t_r002" in text
    assert "captured from a rehearsal on a scratch copy" in text
    assert "r001 inspect(s) the database" in text
    assert 'id="confirm-plan"' in page
    assert tables(url) == set()  # the rehearsal ran on a copy

    job = _confirm(client, page, "upgrade", "head")
    assert job["status"] == "succeeded", job
    assert version_table(url) == {"r002"}
    assert {"t", "t_r000", "t_r002"} <= tables(url)

    # downgrade base: r002's downgrade opens an ORM session on the connection.
    page = _plan_page(client, "downgrade", "base")
    text = _text(page)
    assert _step_order(page) == ["r002", "r001", "r000"]
    assert "r002 inspect(s) the database" in text
    assert "DROP TABLE t_r002" in text and "DROP TABLE t_r000" in text
    job = _confirm(client, page, "downgrade", "base")
    assert job["status"] == "succeeded", job
    assert version_table(url) == set()
    assert not {"t", "t_r000", "t_r002"} & tables(url)


def test_postgresql_plan_shows_a_note_and_the_source_and_runs(make_app, tmp_path, monkeypatch,
                                                              pg_url):
    app, client = _app(make_app, tmp_path, monkeypatch, pg_url)

    page = _plan_page(client, "upgrade", "head")
    text = _text(page)
    assert _step_order(page) == ["r000", "r001", "r002"]
    # The other revisions' SQL is there; r001's is a note, with its source.
    assert "CREATE TABLE t_r000" in text and "CREATE TABLE t_r002" in text
    assert UNSEEN_NOTE in text
    assert 'get_table_names(): op.create_table("t"' in text  # r001's source is shown
    assert "NoInspectionAvailable" in text
    # lint says what it could not see
    assert re.search(r"not seen\s*in\s*r001", text), text[text.find("Lint"):][:800]
    assert 'id="confirm-plan"' in page
    assert tables(pg_url) == set()

    job = _confirm(client, page, "upgrade", "head")
    assert job["status"] == "succeeded", job
    assert version_table(pg_url) == {"r002"}
    assert {"t", "t_r000", "t_r002"} <= tables(pg_url)

    page = _plan_page(client, "downgrade", "base")
    text = _text(page)
    assert _step_order(page) == ["r002", "r001", "r000"]
    assert UNSEEN_NOTE in text and "'MockConnection' object has no attribute 'close'" in text
    assert "DROP TABLE t_r000" in text and "DROP TABLE t" in text
    assert "DROP TABLE t_r002" not in text.split("Source of")[0]  # only the note for r002
    job = _confirm(client, page, "downgrade", "base")
    assert job["status"] == "succeeded", job
    assert version_table(pg_url) == set()
    assert not {"t", "t_r000", "t_r002"} & tables(pg_url)


def test_the_api_still_runs_it_and_the_hash_pins_the_file(make_app, tmp_path, monkeypatch,
                                                         pg_url):
    app, client = _app(make_app, tmp_path, monkeypatch, pg_url)
    page = _plan_page(client, "upgrade", "head")
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', page).group(1)
    # The revision whose SQL is not shown is pinned by its file's checksum.
    path = tmp_path / "env" / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace('sa.String(50)', 'sa.String(60)'))
    response = client.post("/targets/shop/jobs", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": plan_hash})
    assert response.status_code == 409, response.get_data(as_text=True)[-1500:]
    assert version_table(pg_url) == set()

    headers = token_headers(app, "pipeline", "admin")
    up = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                        "revision": "r001"}, headers=headers)
    assert up.status_code == 202, up.json
    assert wait_job(client, up.json["job"], headers)["status"] == "succeeded"
    assert version_table(pg_url) == {"r001"}


def test_a_request_on_a_protected_target_shows_the_note_and_source(make_app, tmp_path,
                                                                   monkeypatch, pg_url):
    monkeypatch.setenv("INSPECT_URL", pg_url)
    ini = make_env(tmp_path / "env", _revisions())
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "INSPECT_URL",
        "policy": {"approvals_required": 1}}}))
    add_user(app, "olga", "admin")
    client = app.test_client()
    login(client, "olga")
    page = _plan_page(client, "upgrade", "head")
    assert 'id="request-approval"' in page and UNSEEN_NOTE in _text(page)
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', page).group(1)
    response = client.post("/targets/shop/requests", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": plan_hash, "reason": "release 4.2"})
    assert response.status_code == 303, response.get_data(as_text=True)[-1500:]
    shown = client.get(response.headers["Location"])
    text = _text(shown.get_data(as_text=True))
    assert shown.status_code == 200
    assert UNSEEN_NOTE in text and 'get_table_names(): op.create_table("t"' in text
    assert version_table(pg_url) == set()
