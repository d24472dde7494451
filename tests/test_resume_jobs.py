"""Resume jobs (issue 21, item 2): a failed job's half-applied revision is
finished by a job like any other — through ``submit()``, with a plan that
names the statements it skips (they are in its hash) and, on a protected
target, an approval — from the job page, the plan API and the jobs API."""

from __future__ import annotations

import re

import sqlalchemy as sa
from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

# ten statements of which 4 run, then the 5th fails: the table it inserts
# into does not exist (yet: the tests create it, as the fix made elsewhere)
HALF = ('op.create_table("a", sa.Column("id", sa.Integer, primary_key=True)); '
        'op.add_column("a", sa.Column("note", sa.String(20), server_default="x")); '
        'op.create_index("ix_a_note", "a", ["note"]); '
        'op.create_table("b", sa.Column("id", sa.Integer, primary_key=True)); '
        'op.execute("INSERT INTO fix_me (id) VALUES (7)"); '
        'op.create_table("c", sa.Column("id", sa.Integer, primary_key=True))')
REVS = [Rev("r000", None), Rev("r001", "r000", upgrade=HALF), Rev("r002", "r001")]


def _app(make_app, tmp_path, monkeypatch, url: str, policy: dict | None = None):
    monkeypatch.setenv("SHOP_URL", url)
    ini = make_env(tmp_path / "env", REVS)
    spec = {"tier": "production" if policy else "staging", "alembic_ini": str(ini),
            "url_env": "SHOP_URL", **({"policy": policy} if policy else {})}
    return make_app(write_targets_file(tmp_path / "targets.toml", {"shop": spec}))


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _execute(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def test_resume_job_finishes_the_half_applied_revision_sqlite(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    app = _app(make_app, tmp_path, monkeypatch, url)
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    failed = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    assert failed["status"] == "failed" and failed["failed_revision"] == "r001"
    assert {"a", "b"} <= _tables(url) and "c" not in _tables(url)
    resume = {"command": "upgrade", "revision": "head", "resume_of": failed["id"]}

    # the plan of the resume (the plan API): what it skips is in the SQL and the warnings
    plan = client.get("/api/v1/targets/shop/plan", headers=headers, query_string=resume)
    assert plan.status_code == 200, plan.json
    assert f"resume of job {failed['id']}: statement(s) 1, 2, 3, 4 of r001" in \
        plan.json["warnings"][0]
    assert re.search(r"-- +skip +1: CREATE TABLE a", plan.json["sql"]), plan.json["sql"]
    assert re.search(r"-- +run +5: INSERT INTO fix_me", plan.json["sql"])
    # the skipped statements are comments in the SQL, so neither lint nor the
    # forecast counts them; the statements that run are there as plain SQL
    body = plan.json["sql"].split("-- Running upgrade r000 -> r001", 1)[1]
    assert re.search(r"^-- skipped: CREATE TABLE a", body, re.M), body
    assert re.search(r"^-- skipped: CREATE INDEX", body, re.M), body
    assert re.search(r"^INSERT INTO fix_me", body, re.M), body
    assert re.search(r"^CREATE TABLE c", body, re.M), body
    forecast = [f["statement"] for f in plan.json["forecast"] if f["revision"] == "r001"]
    assert forecast and not [f for f in forecast if f.startswith(("CREATE TABLE a",
                                                                 "CREATE INDEX"))], forecast
    plain = client.get("/api/v1/targets/shop/plan", headers=headers, query_string={
        "command": "upgrade", "revision": "head"}).json
    assert plain["plan_hash"] != plan.json["plan_hash"]  # the statements skipped are pinned

    # the wrong command for that job, and a job id that is not a number: 400
    wrong = client.post("/api/v1/targets/shop/jobs", headers=headers,
                        json={**resume, "revision": "r001"})
    assert wrong.status_code == 400 and "runs its own command" in wrong.json["detail"]
    assert client.post("/api/v1/targets/shop/jobs", headers=headers,
                       json={**resume, "resume_of": "x"}).status_code == 400

    _execute(url, "CREATE TABLE fix_me (id INTEGER)")  # what made statement 5 fail is fixed
    started = client.post("/api/v1/targets/shop/jobs", headers=headers, json=resume)
    assert started.status_code == 202, started.json
    done = wait_job(client, started.json["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    assert done["to"] == ["r002"] and done["applied"] == ["r001", "r002"]
    assert done["resume_of"] == failed["id"] and done["skipped"] == [1, 2, 3, 4]
    assert {"a", "b", "c", "fix_me"} <= _tables(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM fix_me")).scalars().all() == [7]
    engine.dispose()

    # the failed job cannot be resumed twice: a later job ran on the target
    again = client.post("/api/v1/targets/shop/jobs", headers=headers, json=resume)
    assert again.status_code == 409 and f"Job {done['id']} ran on shop" in again.json["detail"]


def test_resume_from_the_job_page_through_its_plan(make_app, tmp_path, monkeypatch):
    """The failed job's page recommends the resume and links its plan page;
    confirming that plan (its hash and ``resume_of`` in the form) runs it."""
    url = sqlite_url(tmp_path / "shop.db")
    app = _app(make_app, tmp_path, monkeypatch, url)
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    headers = token_headers(app, "pipe", "operator")
    failed = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    page = client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert 'id="journal-resume-job"' in page, page
    link = re.search(r'id="plan-resume" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert f"resume_of={failed['id']}" in link
    _execute(url, "CREATE TABLE fix_me (id INTEGER)")
    plan_page = client.get(link).get_data(as_text=True)
    assert f"Resume job #{failed['id']}" in plan_page and "resume-badge" in plan_page
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"',
                           plan_page.split('id="confirm-plan"')[0].rsplit("<form", 1)[1]))
    assert form["resume_of"] == str(failed["id"])
    tampered = client.post("/targets/shop/jobs", data={**form, "resume_of": ""})
    assert tampered.status_code == 409  # without the resume it is another plan: refused
    answer = client.post("/targets/shop/jobs", data=form)
    assert answer.status_code == 303, answer.get_data(as_text=True)
    job_id = int(answer.headers["Location"].rsplit("/", 1)[1])
    done = wait_job(client, job_id, headers)
    assert done["status"] == "succeeded" and done["skipped"] == [1, 2, 3, 4], done["log"]
    page = client.get(f"/jobs/{failed['id']}").get_data(as_text=True)  # resumed: no offer left
    assert 'id="journal-superseded"' in page and f"#{job_id}</a> ran on this target" in page
    assert 'id="plan-resume"' not in page


def test_resume_on_a_protected_mariadb_target_needs_approval(make_app, tmp_path, monkeypatch,
                                                             mysql_url):
    """On MariaDB (DDL not transactional) and a protected target: the resume
    is a request; its approval runs it; the schema is then a clean upgrade's."""
    app = _app(make_app, tmp_path, monkeypatch, mysql_url,
               policy={"approvals_required": 1, "run_on_approval": True})
    operator = token_headers(app, "olga", "operator")
    approver = token_headers(app, "anna", "approver")
    client = app.test_client()

    def approved_job(body: dict) -> dict:
        asked = client.post("/api/v1/targets/shop/jobs", headers=operator,
                            json={**body, "reason": "release 7"})
        assert asked.status_code == 202 and "request" in asked.json, asked.json
        decided = client.post(f"/api/v1/requests/{asked.json['request']}/approve",
                              headers=approver, json={"comment": "ok"})
        assert decided.status_code == 200 and "job" in decided.json, decided.json
        return wait_job(client, decided.json["job"], operator)

    failed = approved_job({"command": "upgrade", "revision": "head"})
    assert failed["status"] == "failed" and failed["failed_revision"] == "r001"
    viewer = token_headers(app, "vic", "viewer")
    direct = client.post("/api/v1/targets/shop/jobs", headers=viewer, json={
        "command": "upgrade", "revision": "head", "resume_of": failed["id"], "reason": "x"})
    assert direct.status_code == 403  # a viewer may not: the role is checked first
    _execute(mysql_url, "CREATE TABLE fix_me (id INTEGER)")
    done = approved_job({"command": "upgrade", "revision": "head", "resume_of": failed["id"]})
    assert done["status"] == "succeeded", done["log"]
    assert done["resume_of"] == failed["id"] and done["skipped"] == [1, 2, 3, 4]
    assert done["to"] == ["r002"]
    assert {"a", "b", "c"} <= _tables(mysql_url)


def _compensate_then_upgrade(client, headers, url: str, failed: dict) -> dict:
    """Compensate ``failed`` through the jobs API, check the database is back
    at r000 with nothing of r001 left, then fix the cause and upgrade plainly."""
    body = {"command": "compensate", "revision": "r001", "compensate_of": failed["id"]}
    plan = client.get("/api/v1/targets/shop/plan", headers=headers, query_string=body)
    assert plan.status_code == 200, plan.json
    assert plan.json["steps"] == [] and plan.json["from"] == plan.json["to"] == ["r000"]
    assert plan.json["sql"].splitlines()[0].startswith("DROP TABLE b"), plan.json["sql"]
    assert "compensation of job" in plan.json["warnings"][0]
    wrong = client.post("/api/v1/targets/shop/jobs", headers=headers,
                        json={**body, "revision": "r000"})
    assert wrong.status_code == 400, wrong.json
    done = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers,
                                        json=body).json["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    assert done["compensate_of"] == failed["id"] and len(done["undone"]) == 4
    assert done["from"] == done["to"] == ["r000"] and done["applied"] == []
    assert not {"a", "b", "c"} & _tables(url)
    _execute(url, "CREATE TABLE fix_me (id INTEGER)")
    upgraded = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    assert upgraded["status"] == "succeeded" and upgraded["to"] == ["r002"], upgraded["log"]
    return done


def test_compensation_job_undoes_what_took_effect_sqlite(make_app, tmp_path, monkeypatch):
    """The page offers the compensation as a job; through the API it drops
    what r001 created (newest first), the version table stays at r000, and a
    plain upgrade then runs r001 from its start."""
    url = sqlite_url(tmp_path / "shop.db")
    app = _app(make_app, tmp_path, monkeypatch, url)
    add_user(app, "olga", "operator")
    page_client = app.test_client()
    login(page_client, "olga")
    headers = token_headers(app, "pipe", "operator")
    client = app.test_client()
    failed = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    page = page_client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    link = re.search(r'id="plan-compensate" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    plan_page = page_client.get(link).get_data(as_text=True)
    assert f"Compensate job #{failed['id']}: undo 4 statements of r001" in plan_page
    assert 'name="compensate_of"' in plan_page and 'id="rehearsal"' not in plan_page
    _compensate_then_upgrade(client, headers, url, failed)


def test_compensation_job_on_mariadb(make_app, tmp_path, monkeypatch, mysql_url):
    app = _app(make_app, tmp_path, monkeypatch, mysql_url)
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    failed = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    assert failed["status"] == "failed"
    done = _compensate_then_upgrade(client, headers, mysql_url, failed)
    assert "DROP INDEX ix_a_note ON a" in done["undone"]


def test_compensation_on_a_protected_target_is_a_request(make_app, tmp_path, monkeypatch):
    """A compensation on a protected target is stored as a request (command
    compensate, the failed job named); its approval runs exactly that plan."""
    url = sqlite_url(tmp_path / "shop.db")
    app = _app(make_app, tmp_path, monkeypatch, url,
               policy={"approvals_required": 1, "run_on_approval": True})
    operator = token_headers(app, "olga", "operator")
    approver = token_headers(app, "anna", "approver")
    client = app.test_client()

    def approved(body: dict) -> dict:
        asked = client.post("/api/v1/targets/shop/jobs", headers=operator,
                            json={**body, "reason": "incident 12"})
        assert asked.status_code == 202 and "request" in asked.json, asked.json
        decided = client.post(f"/api/v1/requests/{asked.json['request']}/approve",
                              headers=approver, json={"comment": "ok"})
        assert "job" in decided.json, decided.json
        return wait_job(client, decided.json["job"], operator)

    failed = approved({"command": "upgrade", "revision": "head"})
    assert failed["status"] == "failed"
    done = approved({"command": "compensate", "revision": "r001", "compensate_of": failed["id"]})
    assert done["status"] == "succeeded" and done["compensate_of"] == failed["id"], done["log"]
    assert not {"a", "b"} & _tables(url) and done["to"] == ["r000"]
