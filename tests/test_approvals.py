"""Approvals on protected targets: requests, self-approval refused, counts,
plan pinning, expiry, withdraw, applied-revision checksums, webhooks."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.common import add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.models import AuditEvent, Job


def protected_app(make_app, tmp_path, monkeypatch, *, required=1, run_on_approval=True,
                  webhook_url=None, revs=None, **config):
    url = sqlite_url(tmp_path / 'prod.db')
    monkeypatch.setenv("PROD_URL", url)
    ini = make_env(tmp_path / "env", revs or linear(3))
    spec = {"tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
            "policy": {"approvals_required": required, "run_on_approval": run_on_approval}}
    if webhook_url:
        spec["webhook_url"] = webhook_url
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"prod": spec}), **config)
    return app, url, tmp_path / "env"


def api_request(client, headers, revision="head", reason="release 1"):
    return client.post("/api/v1/targets/prod/jobs", headers=headers,
                       json={"command": "upgrade", "revision": revision, "reason": reason})


def count_jobs(app) -> int:
    with app.app_context():
        from webapp.extensions import db
        return db.session.execute(db.select(db.func.count(Job.id))).scalar()


def test_request_then_approval_by_another_approver_runs_the_job(make_app, tmp_path,
                                                                 monkeypatch):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    response = api_request(client, op)
    assert response.status_code == 202 and set(response.json) >= {"request"}
    request_id = response.json["request"]
    assert count_jobs(app) == 0 and version_table(url) == set()
    listed = client.get("/api/v1/requests", headers=ap).json
    assert [r["id"] for r in listed] == [request_id]
    assert listed[0]["requester"] == "olga" and listed[0]["steps"][0]["sha256"]
    # the requester cannot approve, not even through the API
    self_approve = client.post(f"/api/v1/requests/{request_id}/approve", headers=op,
                               json={"comment": "lgtm"})
    assert self_approve.status_code == 403
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap,
                           json={"comment": "checked the SQL"})
    assert approved.status_code == 200 and approved.json["status"] == "executed"
    job = wait_job(client, approved.json["job"], ap)
    assert job["status"] == "succeeded" and version_table(url) == {"r002"}
    assert job["user"] == "olga"  # the job is the requester's


def test_self_approval_is_refused_even_for_an_admin_requester(make_app, tmp_path, monkeypatch):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch)
    add_user(app, "root", "admin")
    client = app.test_client()
    login(client, "root")
    page = client.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert 'id="request-approval"' in page and 'id="confirm-plan"' not in page
    plan_hash = re.search(r'name="plan_hash" value="(\w+)"', page).group(1)
    response = client.post("/targets/prod/requests", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": plan_hash, "reason": "ship it"})
    assert response.status_code == 303
    request_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="approve"' not in request_page  # no button for one's own request
    request_id = int(response.headers["Location"].rsplit("/", 1)[1])
    forged = client.post(f"/requests/{request_id}/approve",
                         data={"csrf_token": csrf_from(request_page), "comment": "me"})
    assert forged.status_code == 403 and "own request" in forged.get_data(as_text=True)
    # a direct job on the protected target is refused too
    direct = client.post("/targets/prod/jobs", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": plan_hash})
    assert direct.status_code == 403
    assert count_jobs(app) == 0 and version_table(url) == set()
    with app.app_context():
        from webapp.extensions import db
        denied = db.session.execute(db.select(AuditEvent).filter_by(
            action="request.decide", outcome="denied")).scalars().all()
        assert denied and "self_approval" in denied[0].details


def test_two_approvals_required_and_no_double_approval(make_app, tmp_path, monkeypatch):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch, required=2)
    op = token_headers(app, "olga", "operator")
    ap1 = token_headers(app, "anna", "approver")
    ap2 = token_headers(app, "bert", "approver")
    viewer = token_headers(app, "vic", "viewer")
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=viewer,
                       json={}).status_code == 403
    first = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap1, json={})
    assert first.status_code == 200 and first.json["status"] == "open"
    assert "job" not in first.json and count_jobs(app) == 0
    again = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap1, json={})
    assert again.status_code == 409 and again.json["error"] == "already_decided"
    assert count_jobs(app) == 0
    second = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap2, json={})
    assert second.status_code == 200 and "job" in second.json
    assert wait_job(client, second.json["job"], ap2)["status"] == "succeeded"


def test_reject_closes_the_request(make_app, tmp_path, monkeypatch):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    rejected = client.post(f"/api/v1/requests/{request_id}/reject", headers=ap,
                           json={"comment": "drops a column we still read"})
    assert rejected.status_code == 200 and rejected.json["status"] == "rejected"
    late = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap, json={})
    assert late.status_code == 409 and count_jobs(app) == 0


def test_edited_revision_file_after_request_voids_approval(make_app, tmp_path, monkeypatch):
    app, url, root = protected_app(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    path = root / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(51)"))
    response = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap, json={})
    assert response.status_code == 409 and response.json["error"] == "plan_changed"
    assert "back to review" in response.json["detail"]
    assert count_jobs(app) == 0 and version_table(url) == set()
    data = client.get("/api/v1/requests", headers=ap).json[0]
    assert data["status"] == "open" and all(a["void"] for a in data["approvals"])
    assert "Back to review" in data["note"]
    # the new plan can be approved again by the approver
    again = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap, json={})
    assert again.status_code == 200 and "job" in again.json
    assert wait_job(client, again.json["job"], ap)["status"] == "succeeded"


def test_database_moved_after_approval_refuses_run(make_app, tmp_path, monkeypatch):
    from webapp.core.runner import run_command

    app, url, _ = protected_app(make_app, tmp_path, monkeypatch, run_on_approval=False)
    add_user(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    ui = app.test_client()
    login(ui, "olga")
    page = ui.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    response = ui.post("/targets/prod/requests", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "head",
        "plan_hash": re.search(r'name="plan_hash" value="(\w+)"', page).group(1),
        "reason": "ship"})
    request_id = int(response.headers["Location"].rsplit("/", 1)[1])
    approved = ui.application.test_client().post(f"/api/v1/requests/{request_id}/approve",
                                                 headers=ap, json={})
    assert approved.json["status"] == "approved" and "job" not in approved.json
    # someone runs the CLI meanwhile
    target = app.extensions["alembic_dashboard"].get("prod")
    run_command(target, "upgrade", "r000", url=url)
    request_page = ui.get(f"/requests/{request_id}").get_data(as_text=True)
    refused = ui.post(f"/requests/{request_id}/run",
                      data={"csrf_token": csrf_from(request_page)})
    assert refused.status_code == 409
    assert "plan changed since approval" in refused.get_data(as_text=True).lower()
    assert count_jobs(app) == 0 and version_table(url) == {"r000"}
    assert "Back to review" in ui.get(f"/requests/{request_id}").get_data(as_text=True)


def test_a_plan_stored_in_the_old_shape_still_loads(make_app, tmp_path, monkeypatch):
    """Requests stored before the rename keep their plan as ``current``/``heads_after``:
    the request page, the API and the approval still read them."""
    from webapp.core.runner import run_command
    from webapp.extensions import db
    from webapp.models import ApprovalRequest

    app, url, _ = protected_app(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    run_command(app.extensions["alembic_dashboard"].get("prod"), "upgrade", "r000", url=url)
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    with app.app_context():
        found = db.session.get(ApprovalRequest, request_id)
        stored = json.loads(found.plan)
        assert stored["current_before"] == ["r000"] and stored["current_after"] == ["r002"]
        assert "current" not in stored and "heads_after" not in stored
        stored["current"], stored["heads_after"] = (stored.pop("current_before"),
                                                    stored.pop("current_after"))
        found.plan = json.dumps(stored)
        db.session.commit()
    listed = client.get("/api/v1/requests", headers=ap).json[0]
    assert listed["from"] == ["r000"] and listed["to"] == ["r002"]
    add_user(app, "anna2", "approver")
    login(client, "anna2")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "r000 → r002" in page
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap, json={})
    assert approved.status_code == 200 and approved.json["status"] == "executed"
    job = wait_job(client, approved.json["job"], ap)
    assert job["status"] == "succeeded" and job["from"] == ["r000"] and job["to"] == ["r002"]
    assert version_table(url) == {"r002"}


def test_expiry_and_withdraw(make_app, tmp_path, monkeypatch):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch, REQUEST_TTL_HOURS=0.5 / 3600)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    time.sleep(1.0)
    expired = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap, json={})
    assert expired.status_code == 409 and "expired" in expired.json["detail"]
    app.config["REQUEST_TTL_HOURS"] = 24
    second = api_request(client, op).json["request"]
    add_user(app, "olga-ui", "operator")  # withdrawing is for the requester only
    ui = app.test_client()
    login(ui, "olga-ui")
    page = ui.get(f"/requests/{second}").get_data(as_text=True)
    not_mine = ui.post(f"/requests/{second}/withdraw", data={"csrf_token": csrf_from(page)})
    assert not_mine.status_code == 403
    with app.app_context():
        from webapp.services import approvals, audit
        from webapp.services.accounts import get_user
        approvals.withdraw(second, get_user("olga"), audit.Actor("olga", "test"))
        events = [e.action for e in approvals.db.session.execute(
            approvals.db.select(AuditEvent)).scalars()]
    assert "request.expire" in events and "request.withdraw" in events
    assert client.post(f"/api/v1/requests/{second}/approve", headers=ap,
                       json={}).status_code == 409
    assert count_jobs(app) == 0


def test_checksum_warning_after_editing_an_applied_revision(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'c.db')
    monkeypatch.setenv("CK_URL", url)
    root = tmp_path / "env"
    ini = make_env(root, linear(3))
    app = make_app(write_targets_file(tmp_path / "t.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "CK_URL"}}))
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    job = client.post("/api/v1/targets/shop/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json
    assert wait_job(client, job["job"], headers)["status"] == "succeeded"
    add_user(app, "vic", "viewer")
    ui = app.test_client()
    login(ui, "vic")
    assert "was edited after it was applied" not in ui.get("/targets/shop").get_data(
        as_text=True)
    path = root / "versions" / "r001_rev.py"
    path.write_text(path.read_text() + "\n# tweaked after release\n")
    page = ui.get("/targets/shop").get_data(as_text=True)
    assert "revision r001 was edited after it was applied on shop on" in page
    history = ui.get("/targets/shop/history").get_data(as_text=True)
    assert "edited since applied" in history.split('id="rev-r001"')[1].split("</tr>")[0]
    (root / "versions" / "r002_rev.py").unlink()
    page = ui.get("/targets/shop").get_data(as_text=True)
    assert "revision r002 was applied on shop on" in page and "disappeared" in page


class Receiver:
    """A local HTTP server that records the JSON POSTs it receives."""

    def __init__(self, fail_first: int = 0) -> None:
        self.payloads: list[dict] = []
        self.failures_left = fail_first  # answer 503 this many times first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers["Content-Length"])
                outer.payloads.append(json.loads(self.rfile.read(length)))
                failing = outer.failures_left > 0
                outer.failures_left -= 1
                self.send_response(503 if failing else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [p["event"] for p in self.payloads]


def test_webhook_payloads(make_app, tmp_path, monkeypatch):
    receiver = Receiver()
    try:
        app, url, _ = protected_app(make_app, tmp_path, monkeypatch,
                                    webhook_url=receiver.url)
        op = token_headers(app, "olga", "operator")
        ap = token_headers(app, "anna", "approver")
        client = app.test_client()
        request_id = api_request(client, op).json["request"]
        approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap,
                               json={"comment": "ok"}).json
        wait_job(client, approved["job"], ap)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and "job.finished" not in receiver.events():
            time.sleep(0.2)
        assert receiver.events()[:2] == ["request.created", "request.approved"]
        assert "job.finished" in receiver.events()
        created = receiver.payloads[0]
        assert created["target"] == "prod" and created["request"] == request_id
        assert "olga requests approval" in created["text"]  # Slack-compatible line
        assert created["approvers"] == ["anna"]  # eligible approvers, never the requester
        assert receiver.payloads[1]["approvers"] == ["anna"]
        finished = next(p for p in receiver.payloads if p["event"] == "job.finished")
        assert finished["status"] == "succeeded" and finished["to"] == ["r002"]
        assert "sqlite" not in json.dumps(receiver.payloads)
    finally:
        receiver.server.shutdown()


def test_webhooks_to_one_url_arrive_in_the_order_they_were_sent(make_app, tmp_path,
                                                                 monkeypatch):
    """Deliveries run in the background, but one URL gets its events one
    after another: a burst of 30 arrives in order (each delivery in a
    thread of its own, as before, raced: 'approved' could come first)."""
    receiver = Receiver()
    try:
        app, url, _ = protected_app(make_app, tmp_path, monkeypatch, webhook_url=receiver.url)
        from webapp.services import notify

        with app.app_context():
            for n in range(30):
                notify.send(f"test.{n:02d}", "prod", text=f"event {n}")
        notify.wait_all(30)
        assert receiver.events() == [f"test.{n:02d}" for n in range(30)]
    finally:
        receiver.server.shutdown()


def test_webhook_answering_503_is_retried_then_delivered(make_app, tmp_path, monkeypatch):
    receiver = Receiver(fail_first=2)
    try:
        app, url, _ = protected_app(make_app, tmp_path, monkeypatch, webhook_url=receiver.url)
        client = app.test_client()
        assert api_request(client, token_headers(app, "olga", "operator")).status_code == 202
        from webapp.services import notify
        notify.wait_all(20)
        # two 503s, then the third attempt is taken: nothing is recorded as failed
        assert receiver.events() == ["request.created"] * 3
        with app.app_context():
            from webapp.extensions import db
            assert not db.session.execute(db.select(AuditEvent).filter_by(
                action="webhook")).scalars().all()
    finally:
        receiver.server.shutdown()


def test_dead_webhook_does_not_slow_requests_and_is_audited(make_app, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook?token=secret-token"
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch, webhook_url=dead)
    op = token_headers(app, "olga", "operator")
    client = app.test_client()
    response = api_request(client, op)
    assert response.status_code == 202
    # Delivery happens in the background: the answer came while the delivery
    # (three refused attempts with 0.5 s and 1 s of backoff between them) was
    # still under way, so its failure is not recorded yet. (A wall-clock limit
    # on the answer failed on a loaded machine, where the plan alone took 5 s.)
    from webapp.services import notify
    assert notify.in_flight() >= 1
    with app.app_context():
        from webapp.extensions import db
        assert not db.session.execute(db.select(AuditEvent).filter_by(
            action="webhook")).scalars().all()
    notify.wait_all(20)
    with app.app_context():
        from webapp.extensions import db
        failed = db.session.execute(db.select(AuditEvent).filter_by(
            action="webhook", outcome="failed")).scalars().all()
    assert failed and "request.created" in failed[0].details
    assert "secret-token" not in failed[0].details


@pytest.mark.parametrize("payload", [None, {"comment": 5}])
def test_bad_decision_payloads(make_app, tmp_path, monkeypatch, payload):
    app, url, _ = protected_app(make_app, tmp_path, monkeypatch)
    op = token_headers(app, "olga", "operator")
    ap = token_headers(app, "anna", "approver")
    client = app.test_client()
    request_id = api_request(client, op).json["request"]
    response = client.post(f"/api/v1/requests/{request_id}/approve", headers=ap,
                           json=payload) if payload is not None else client.post(
        f"/api/v1/requests/{request_id}/approve", headers=ap, data="x")
    if payload is None:
        assert response.status_code == 200  # a missing body means no comment
        assert wait_job(client, response.json["job"], ap)["status"] == "succeeded"
    else:
        assert response.status_code == 400 and count_jobs(app) == 0
