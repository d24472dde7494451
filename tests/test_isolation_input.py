"""Issue 17, finding 4 and the input items of finding 6: text that cannot be
encoded as UTF-8 or carries control characters where none belong is refused
with a 400 before anything is recorded; rows that already hold such text
still render; the login's ``next``, non-object JSON bodies, reversed SQL
ranges and format characters in revision messages are refused or made safe.
Each test replays the review's request."""

from __future__ import annotations

import csv
import io
import json

import pytest
from support.common import PASSWORD, add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers

from webapp.models import ApprovalRequest, AuditEvent, Job, Rollout

SURROGATE_JOB = '{"command": "upgrade", "revision": "\\ud800"}'


def _count(app, model) -> int:
    with app.app_context():
        from webapp.extensions import db
        return db.session.execute(db.select(db.func.count(model.id))).scalar()


def _audit_details(app) -> list[str]:
    with app.app_context():
        from webapp.extensions import db
        return [e.details for e in db.session.execute(db.select(AuditEvent)).scalars()]


def _admin(app):
    add_user(app, "alice", "admin")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return client


def test_lone_surrogate_in_a_job_body_is_refused_and_audit_pages_still_render(demo_app):
    client = demo_app.test_client()
    response = client.post("/api/v1/targets/demo-staging/jobs", data=SURROGATE_JOB,
                           content_type="application/json")
    assert response.status_code in (400, 401)  # no credentials: refused either way
    for role in ("viewer", "operator"):
        response = client.post("/api/v1/targets/demo-staging/jobs", data=SURROGATE_JOB,
                               headers={**token_headers(demo_app, f"u{role}", role),
                                        "Content-Type": "application/json"})
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.json["error"] == "bad_input" and "revision" in response.json["detail"]
    assert not any("ud800" in d for d in _audit_details(demo_app))
    assert _count(demo_app, Job) == 0
    admin = _admin(demo_app)
    assert admin.get("/audit").status_code == 200
    assert admin.get("/audit/export.csv").status_code == 200


def test_lone_surrogate_in_a_reason_is_refused_for_requests_and_rollouts(demo_app):
    operator = token_headers(demo_app, "olga", "operator")
    client = demo_app.test_client()
    for url, body in (
            ("/api/v1/targets/demo-production/jobs",
             '{"command": "upgrade", "revision": "heads", "reason": "x\\ud800"}'),
            ("/api/v1/rollouts",
             '{"command": "upgrade", "revision": "heads", "tag": ["shop"], '
             '"reason": "x\\ud800"}')):
        response = client.post(url, data=body, headers={**operator,
                                                        "Content-Type": "application/json"})
        assert response.status_code == 400, (url, response.get_data(as_text=True))
        assert "reason" in response.json["detail"]
    assert _count(demo_app, ApprovalRequest) == 0 and _count(demo_app, Rollout) == 0


@pytest.mark.parametrize("body", [
    {"command": "upgrade", "revision": "heads\x01"},
    {"command": "upgrade", "revision": "he\nads"},
    {"command": "upg\trade", "revision": "heads"},
    {"command": "upgrade", "revision": "heads\u202e"},
    {"command": "upgrade", "revision": "heads", "reason": "a\x00b"},
    {"command": "upgrade", "revision": "heads", "reason": "bell\x07"},
    {"command": "upgrade", "revision": "heads", "re\ud800ason": "x"},
])
def test_control_characters_where_none_belong_are_refused(demo_app, body):
    operator = token_headers(demo_app, "olga", "operator")
    response = demo_app.test_client().post("/api/v1/targets/demo-production/jobs",
                                           json=body, headers=operator)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert _count(demo_app, ApprovalRequest) == 0 and _count(demo_app, Job) == 0
    assert all("\\u0000" not in d and "\\u0007" not in d for d in _audit_details(demo_app))


def test_line_breaks_and_tabs_stay_allowed_in_reasons(demo_app):
    operator = token_headers(demo_app, "olga", "operator")
    response = demo_app.test_client().post(
        "/api/v1/targets/demo-production/jobs", headers=operator,
        json={"command": "upgrade", "revision": "heads", "reason": "line 1\r\n\tline 2"})
    assert response.status_code == 202, response.json
    assert _count(demo_app, ApprovalRequest) == 1


def test_control_characters_in_forms_and_query_strings_are_refused(demo_app):
    admin = _admin(demo_app)
    assert admin.get("/audit?user=al%01ice").status_code == 400
    assert admin.get("/audit?target=demo%0Astaging").status_code == 400
    token = csrf_from(admin.get("/").get_data(as_text=True))
    before = _count(demo_app, AuditEvent)
    response = admin.post("/targets/demo-staging/jobs", data={
        "csrf_token": token, "command": "upgrade", "revision": "heads\x00"})
    assert response.status_code == 400
    assert _count(demo_app, AuditEvent) == before and _count(demo_app, Job) == 0


def _insert_bad_rows(app) -> int:
    """Rows as an older version stored them: JSON with a lone surrogate, text
    with control characters. Returns the approval request's id."""
    with app.app_context():
        from webapp.extensions import db

        db.session.add(AuditEvent(username="eve\x01", action="job.request", outcome="denied",
                                  target="demo-staging",
                                  details=json.dumps({"revision": "\ud800",
                                                      "message": "bell\x07"})))
        found = db.session.execute(db.select(ApprovalRequest)).scalars().first()
        found.reason = "why\x00\x1b[31m"
        plan = json.loads(found.plan)
        plan["warnings"] = list(plan.get("warnings", [])) + ["\udcff warning"]
        found.plan = json.dumps(plan)
        db.session.commit()
        return found.id


def test_stored_rows_with_bad_text_render(demo_app):
    admin = _admin(demo_app)
    operator = token_headers(demo_app, "olga", "operator")
    assert demo_app.test_client().post(
        "/api/v1/targets/demo-production/jobs", headers=operator,
        json={"command": "upgrade", "revision": "heads", "reason": "ok"}).status_code == 202
    request_id = _insert_bad_rows(demo_app)
    page = admin.get("/audit")
    assert page.status_code == 200
    assert "\ufffd" in page.get_data(as_text=True)
    body = admin.get("/audit/export.csv")
    assert body.status_code == 200
    rows = list(csv.reader(io.StringIO(body.get_data(as_text=True))))
    assert any(row[2] == "eve\x01" and "ud800" in row[8] for row in rows[1:]), rows
    assert admin.get(f"/requests/{request_id}").status_code == 200
    assert admin.get("/requests").status_code == 200
    api = admin.get("/api/v1/requests")
    assert api.status_code == 200 and api.is_json


def test_stored_rollout_with_bad_text_renders(demo_app):
    admin = _admin(demo_app)
    token = csrf_from(admin.get("/").get_data(as_text=True))
    response = admin.post("/api/v1/rollouts", headers={"X-CSRFToken": token}, json={
        "command": "upgrade", "revision": "heads", "tag": ["shop"], "paused": True})
    assert response.status_code == 202, response.json
    rollout_id = response.json["id"]
    with demo_app.app_context():
        from webapp.extensions import db

        found = db.session.get(Rollout, rollout_id)
        found.reason = "why\x00\x08"
        found.selection = json.dumps({"tiers": ["\ud800"], "tags": [], "names": []})
        db.session.commit()
    assert admin.get(f"/rollouts/{rollout_id}").status_code == 200
    assert admin.get("/rollouts").status_code == 200
    assert admin.get(f"/api/v1/rollouts/{rollout_id}").status_code == 200


def test_login_next_with_a_line_break_redirects_safely(demo_app):
    add_user(demo_app, "alice", "admin")
    client = demo_app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login?next=/%0d%0aX:%201", data={
        "username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.status_code
    location = response.headers["Location"]
    assert "\r" not in location and "\n" not in location and "X:" not in response.headers
    assert location.startswith("/") and not location.startswith("//")
    assert client.get("/").status_code == 200
    for unsafe in ("/%5Cevil.example", "/%00x", "//evil.example", "https://evil.example/"):
        client = demo_app.test_client()
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post(f"/login?next={unsafe}", data={
            "username": "alice", "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302 and response.headers["Location"] == "/", unsafe
    # an ordinary next still works
    client = demo_app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login?next=/audit%3Fuser%3Dalice", data={
        "username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/audit?user=alice"


def _protected(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "prod.db")
    monkeypatch.setenv("PROD_URL", url)
    ini = make_env(tmp_path / "env", linear(2))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"prod": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
        "policy": {"approvals_required": 1, "run_on_approval": True}}}))
    return app


@pytest.mark.parametrize("body", ["nope", "[1]", '"lgtm"', "1", "{"])
def test_non_object_approval_body_is_refused(make_app, tmp_path, monkeypatch, body):
    app = _protected(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    request_id = client.post("/api/v1/targets/prod/jobs", headers=op, json={
        "command": "upgrade", "revision": "heads", "reason": "r"}).json["request"]
    for content_type in ("application/json", "application/x-www-form-urlencoded"):
        response = client.post(f"/api/v1/requests/{request_id}/approve", data=body,
                               headers={**ap, "Content-Type": content_type})
        assert response.status_code == 400, (content_type, response.get_data(as_text=True))
        assert response.json["error"] == "bad_input"
    assert _count(app, Job) == 0
    with app.app_context():
        from webapp.extensions import db
        assert db.session.get(ApprovalRequest, request_id).status == "open"
    response = client.post("/api/v1/targets/prod/jobs", headers=ap, data="[1]",
                           content_type="application/json")
    assert response.status_code == 400
    response = client.post("/api/v1/rollouts", headers=ap, data="[1]",
                           content_type="application/json")
    assert response.status_code == 400 and _count(app, Rollout) == 0


def test_reversed_sql_range_is_400(demo_app):
    admin = _admin(demo_app)
    history = demo_app.extensions["alembic_dashboard"].history(
        demo_app.extensions["alembic_dashboard"].get("demo-staging"))
    newest, older = history.revisions[0].revision, history.revisions[-1].revision
    assert admin.get(f"/targets/demo-staging/sql?from={older}&to={newest}").status_code == 200
    response = admin.get(f"/targets/demo-staging/sql?from={newest}&to={older}")
    assert response.status_code == 400
    assert "after" in response.get_data(as_text=True)
    assert admin.get(f"/targets/demo-staging/sql?from={newest}&to={newest}").status_code == 400


@pytest.mark.parametrize("message", ["add \u202etable", "zero\u200bwidth", "bom\ufeff",
                                     "isolate \u2066x\u2069"])
def test_format_characters_in_revision_messages_are_refused(make_app, tmp_path, monkeypatch,
                                                            message):
    url = sqlite_url(tmp_path / "a.db")
    ini = make_env(tmp_path / "env", linear(2))
    monkeypatch.setenv("AUTH_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "AUTH_URL",
        "policy": {"allow_revision_authoring": True}}}))
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    versions = tmp_path / "env" / "versions"
    before = sorted(versions.iterdir())
    token = csrf_from(client.get("/").get_data(as_text=True))
    for kind in ("empty", "autogenerate"):
        response = client.post("/targets/shop/revisions", data={
            "csrf_token": token, "kind": kind, "message": message})
        assert response.status_code == 400
        assert "format" in response.get_data(as_text=True)
    assert sorted(versions.iterdir()) == before
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import User
        from webapp.services import audit, authoring
        from webapp.services.refusals import Refused

        target = app.extensions["alembic_dashboard"].get("shop")
        user = db.session.execute(db.select(User).filter_by(username="olga")).scalar_one()
        with pytest.raises(Refused, match="format"):
            authoring.create_revision(app.extensions["alembic_dashboard"], user, target,
                                      kind="merge", message=message, branch_label=None,
                                      head=None, actor=audit.Actor("olga", None))
