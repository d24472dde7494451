"""Plan and run upgrade / downgrade / stamp through the web and the API on
SQLite, MariaDB and PostgreSQL; refusals; busy targets; failures."""

from __future__ import annotations

import logging
import re
import time

import pytest
from support.common import add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.core.demo import DEMO_TARGETS_FILE
from webapp.models import Job

DEMO_INI = DEMO_TARGETS_FILE.parent / "demo" / "alembic.ini"


def make_target_app(make_app, tmp_path, monkeypatch, ini, url, **policy):
    monkeypatch.setenv("JOB_TEST_URL", url)
    spec = {"tier": "staging", "alembic_ini": str(ini), "url_env": "JOB_TEST_URL"}
    if policy:
        spec["policy"] = policy
    return make_app(write_targets_file(tmp_path / "targets.toml", {"shop": spec}))


def confirm_via_ui(client, name: str, command: str, revision: str):
    """Open the plan page, then press its confirm button; return (plan page, response)."""
    page = client.get(f"/targets/{name}/plan", query_string={"command": command,
                                                             "revision": revision})
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html[-1500:]
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', html).group(1)
    response = client.post(f"/targets/{name}/jobs", data={
        "csrf_token": csrf_from(html), "command": command, "revision": revision,
        "plan_hash": plan_hash})
    return html, response


def test_upgrade_downgrade_stamp_through_the_web(make_app, tmp_path, monkeypatch, any_db_url):
    app = make_target_app(make_app, tmp_path, monkeypatch, DEMO_INI, any_db_url)
    add_user(app, "olga", "admin")
    client = app.test_client()
    login(client, "olga")

    plan_html, response = confirm_via_ui(client, "shop", "upgrade", "7a2c9d6f4b86")
    assert "1f3a9c2e7b10" in plan_html and "CREATE TABLE" in re.sub(r"<[^>]+>", "", plan_html)
    assert response.status_code == 303
    job = wait_job(client, int(response.headers["Location"].rsplit("/", 1)[1]))
    assert job["status"] == "succeeded", job["log"]
    assert set(job["to"]) == version_table(any_db_url) == {"7a2c9d6f4b86"}
    assert job["from"] == [] and job["applied"][-1] == "7a2c9d6f4b86"
    assert "Running upgrade" in job["log"]

    _, response = confirm_via_ui(client, "shop", "downgrade", "-1")
    job = wait_job(client, int(response.headers["Location"].rsplit("/", 1)[1]))
    assert job["status"] == "succeeded", job["log"]
    assert set(job["to"]) == version_table(any_db_url) == {"4d9f6a3c1e53"}
    assert job["from"] == ["7a2c9d6f4b86"]

    _, response = confirm_via_ui(client, "shop", "stamp", "9c4e1f8b6da8")
    job = wait_job(client, int(response.headers["Location"].rsplit("/", 1)[1]))
    assert job["status"] == "succeeded", job["log"]
    assert set(job["to"]) == version_table(any_db_url) == {"9c4e1f8b6da8"}

    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "succeeded" in page and "9c4e1f8b6da8" in page
    status = client.get(f"/jobs/{job['id']}/status", headers={"HX-Request": "true"})
    assert status.status_code == 286  # ended: htmx stops polling


def test_api_run_and_job_shape(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'api.db')
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(tmp_path / "e", linear(4)),
                          url)
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": "head"},
                           headers=headers)
    assert response.status_code == 202
    assert set(response.json) == {"job", "status"} and response.json["status"] == "queued"
    job = wait_job(client, response.json["job"], headers)
    for key in ("id", "target", "command", "revision", "status", "from", "to", "log",
                "started_at", "finished_at"):
        assert key in job
    assert job["status"] == "succeeded" and job["to"] == ["r003"] and job["from"] == []
    assert job["target"] == "shop" and job["command"] == "upgrade" and job["revision"] == "head"
    assert version_table(url) == {"r003"}
    again = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                           "revision": "head"}, headers=headers)
    # up to date is a success for a pipeline, not an error (it was 409 nothing_to_do)
    assert again.status_code == 200 and again.json["status"] == "up_to_date", again.json
    assert "r003" in again.json["detail"]
    assert client.get("/api/v1/jobs/99999", headers=headers).status_code == 404


ROLE_CASES = [
    ("viewer", "upgrade", "head", {}, 403),
    ("operator", "stamp", "head", {}, 403),
    ("operator", "downgrade", "-1", {"allow_downgrade": False}, 403),
    ("admin", "downgrade", "-1", {"allow_downgrade": False}, 403),
    ("viewer", "upgrade", "head", {"approvals_required": 1}, 403),
]


@pytest.mark.parametrize(("role", "command", "revision", "policy", "status"), ROLE_CASES)
def test_roles_and_policy_are_enforced_on_the_server(make_app, tmp_path, monkeypatch, role,
                                                      command, revision, policy, status):
    url = sqlite_url(tmp_path / 'r.db')
    ini = make_env(tmp_path / "e", linear(3))
    app = make_target_app(make_app, tmp_path, monkeypatch, ini, url, **policy)
    headers = token_headers(app, "someone", role)
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": command,
                                                              "revision": revision},
                           headers=headers)
    assert response.status_code == status
    assert response.json["error"] in ("role", "policy") and response.json["detail"]
    # the same through the UI, with a session and CSRF token
    add_user(app, "ui-" + role, role)
    ui = app.test_client()
    login(ui, "ui-" + role)
    page = ui.get("/targets/shop/plan", query_string={"command": command, "revision": revision})
    assert page.status_code == status
    token = csrf_from(ui.get("/").get_data(as_text=True))
    post = ui.post("/targets/shop/jobs", data={"csrf_token": token, "command": command,
                                               "revision": revision, "plan_hash": "x"})
    assert post.status_code == status
    with app.app_context():
        from webapp.extensions import db
        assert db.session.execute(db.select(db.func.count(Job.id))).scalar() == 0
    assert version_table(url) == set()


@pytest.mark.parametrize(("revision", "status"), [
    ("../x", 400), ("'; DROP TABLE users; --", 400), ("ffffffffffff", 404),
    ("a" * 10_000, 400), ("", 400), ("head; rm -rf /", 400),
])
def test_bad_revision_strings_create_no_job(make_app, tmp_path, monkeypatch, revision, status):
    url = sqlite_url(tmp_path / 'b.db')
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(tmp_path / "e", linear(2)),
                          url)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": revision},
                           headers=headers)
    assert response.status_code == status, response.json
    bad_command = client.post("/api/v1/targets/shop/jobs", json={"command": "rm",
                                                                 "revision": "head"},
                              headers=headers)
    assert bad_command.status_code == 400
    not_json = client.post("/api/v1/targets/shop/jobs", data="upgrade head", headers=headers)
    assert not_json.status_code == 400
    with app.app_context():
        from webapp.extensions import db
        assert db.session.execute(db.select(db.func.count(Job.id))).scalar() == 0
        from webapp.models import AuditEvent
        denied = db.session.execute(db.select(AuditEvent).filter_by(
            action="job.request", outcome="denied")).scalars().all()
        assert len(denied) == 3


def test_plan_changed_since_shown_is_refused(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'p.db')
    root = tmp_path / "e"
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(root, linear(3)), url)
    add_user(app, "op", "operator")
    client = app.test_client()
    login(client, "op")
    page = client.get("/targets/shop/plan?command=upgrade&revision=head").get_data(as_text=True)
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', page).group(1)
    # someone edits a revision file that is part of the plan
    path = root / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace('sa.String(50)', 'sa.String(60)'))
    response = client.post("/targets/shop/jobs", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": plan_hash})
    assert response.status_code == 409
    assert "plan changed" in response.get_data(as_text=True).lower()
    assert version_table(url) == set()


def test_busy_target_gets_409_naming_the_running_job(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 's.db')
    revs = linear(3)
    revs[1].upgrade = "import time; time.sleep(0 if op.get_context().as_sql else 4)"
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(tmp_path / "e", revs), url)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    first = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                           "revision": "head"}, headers=headers)
    assert first.status_code == 202
    second = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                            "revision": "head"}, headers=headers)
    assert second.status_code == 409 and second.json["job"] == first.json["job"]
    # the UI shows a link to the running job
    add_user(app, "ui", "operator")
    ui = app.test_client()
    login(ui, "ui")
    page = ui.get("/targets/shop").get_data(as_text=True)
    assert f'/jobs/{first.json["job"]}' in page
    # live output while it runs
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = client.get(f"/api/v1/jobs/{first.json['job']}", headers=headers).json
        if "Running upgrade r000 -> r001" in running["log"]:
            break
        time.sleep(0.2)
    assert running["status"] == "running" and "r000 -> r001" in running["log"]
    done = wait_job(client, first.json["job"], headers)
    assert done["status"] == "succeeded" and version_table(url) == {"r002"}


def test_failing_migration_reports_the_failed_revision(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'f.db')
    revs = linear(3)
    revs[2].upgrade = ('if not op.get_context().as_sql: '
                       'raise RuntimeError("disk on fire")')
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(tmp_path / "e", revs), url)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": "head"},
                           headers=headers)
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "failed"
    assert job["failed_revision"] == "r002"
    assert "RuntimeError: disk on fire" in job["error"]
    assert "Traceback" in job["log"] and "disk on fire" in job["log"]
    assert job["to"] == sorted(version_table(url))


def test_mysql_partial_failure_keeps_earlier_revisions(make_app, tmp_path, monkeypatch,
                                                        mysql_url):
    revs = linear(3)
    revs[2].upgrade = ('op.create_table("half_done", sa.Column("id", sa.Integer, '
                       'primary_key=True)); op.execute("SELECT * FROM no_such_table")')
    app = make_target_app(make_app, tmp_path, monkeypatch, make_env(tmp_path / "e", revs),
                          mysql_url)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": "head"},
                           headers=headers)
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "failed"
    assert job["failed_revision"] == "r002"
    assert job["applied"] == ["r000", "r001"]
    assert job["to"] == ["r001"] and version_table(mysql_url) == {"r001"}
    assert "may be partly applied" in job["report"] and "r002" in job["report"]
    assert "stayed applied: r000, r001" in job["report"]
    # the job page (session) states the same
    add_user(app, "ui", "viewer")
    ui = app.test_client()
    login(ui, "ui")
    page = ui.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "may be partly applied" in page


def test_unreachable_database_refuses_with_503(make_app, tmp_path, monkeypatch):
    app = make_target_app(make_app, tmp_path, monkeypatch, DEMO_INI,
                          "mysql+pymysql://root:pw-9x@127.0.0.1:1/x")
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": "heads"},
                           headers=headers)
    assert time.monotonic() - started < 30
    assert response.status_code == 503 and "pw-9x" not in str(response.json)
    assert "OperationalError" in response.json["detail"]


def test_env_py_logging_does_not_touch_the_dashboard(logged_in, demo_app):
    """env.py calls fileConfig(); it runs in another process, so the
    dashboard's loggers and handlers are unchanged after plans and jobs."""
    before = (list(logging.getLogger().handlers), logging.getLogger("webapp").disabled)
    _, response = confirm_via_ui(logged_in, "demo-staging", "upgrade", "+1")
    job = wait_job(logged_in, int(response.headers["Location"].rsplit("/", 1)[1]))
    assert job["status"] == "succeeded" and "INFO  [alembic.runtime.migration]" in job["log"]
    assert (list(logging.getLogger().handlers), logging.getLogger("webapp").disabled) == before
    assert not logging.getLogger("werkzeug").disabled


def test_audit_log_records_and_filters(logged_in, demo_app):
    _, response = confirm_via_ui(logged_in, "demo-staging", "upgrade", "+1")
    wait_job(logged_in, int(response.headers["Location"].rsplit("/", 1)[1]))
    page = logged_in.get("/audit").get_data(as_text=True)
    for action in ("login", "job.confirm", "job.start", "job.end"):
        assert f"<code>{action}</code>" in page
    filtered = logged_in.get("/audit?action=job.end").get_data(as_text=True)
    assert "<code>job.end</code>" in filtered and "<code>login</code>" not in filtered
    csv_text = logged_in.get("/audit/export.csv?target=demo-staging").get_data(as_text=True)
    assert csv_text.startswith("id,at_utc,user,client_address,action,outcome,target,job,details")
    assert "job.confirm" in csv_text and "sqlite:///" not in csv_text
    add_user(demo_app, "op2", "operator")
    other = demo_app.test_client()
    login(other, "op2")
    assert other.get("/audit").status_code == 403
    assert other.get("/audit/export.csv").status_code == 403


@pytest.mark.parametrize("revision", ["heads", "c27b4cbe9a0d", "e49d6ed0bc2f"])
def test_api_quick_plan_has_the_same_steps_as_the_full_plan(demo_app, revision):
    """API upgrades skip rendering offline SQL; their steps must still be
    exactly Alembic's."""
    from webapp.services import jobs

    catalog = demo_app.extensions["alembic_dashboard"]
    with demo_app.app_context():
        req = jobs.JobRequest(catalog.get("demo-staging"), "upgrade", revision)
        quick = jobs.quick_upgrade_plan(catalog, req)
        full = jobs.plan_job(catalog, req)
    assert quick is not None
    assert [(s.revision, s.sha256) for s in quick.steps] == \
        [(s.revision, s.sha256) for s in full.steps]
    assert quick.current_before == full.current_before
    with demo_app.app_context():  # relative steps and other commands take the full plan
        for other in (jobs.JobRequest(req.target, "upgrade", "+1"),
                      jobs.JobRequest(req.target, "downgrade", "-1"),
                      jobs.JobRequest(req.target, "upgrade", "head")):  # 2 heads: Alembic says why
            assert jobs.quick_upgrade_plan(catalog, other) is None
