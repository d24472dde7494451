"""Review first, decide after (issue 20, item 2): the request page shows the
revisions and their SQL before the checks summary and the decision; Viewed
ticks per revision (POST only); the server refuses an approval before every
revision was viewed unless "approve without viewing" is said (recorded);
request changes needs a reason (form and API); the requester submits a new
plan (approvals void, ticks of changed revisions cleared, open again, in the
inbox again); the thread keeps every step in order."""

from __future__ import annotations

import json
import re

from support.common import add_user, csrf_from, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.models import Approval, AuditEvent, Rehearsal, RequestView


def review_app(make_app, tmp_path, monkeypatch, *, required=1, revs=None):
    """A protected target ``prod`` (SQLite) with ``olga`` (operator, token
    headers returned), ``anna`` and ``bert`` (approvers, logged in through the
    form by the caller)."""
    url = sqlite_url(tmp_path / "prod.db")
    monkeypatch.setenv("PROD_URL", url)
    ini = make_env(tmp_path / "env", revs or linear(3))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"prod": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
        "policy": {"approvals_required": required, "run_on_approval": True}}}))
    olga = token_headers(app, "olga", "operator")
    add_user(app, "anna", "approver")
    add_user(app, "bert", "approver")
    return app, url, olga


def new_request(client, headers) -> int:
    posted = client.post("/api/v1/targets/prod/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head", "reason": "release 7"})
    assert posted.status_code == 202, posted.json
    return posted.json["request"]


def logged_in(app, name):
    client = app.test_client()
    login(client, name)
    return client


def page_of(client, request_id) -> str:
    answer = client.get(f"/requests/{request_id}")
    assert answer.status_code == 200
    return answer.get_data(as_text=True)


def tick(client, request_id, revision, page, *, htmx=False, viewed="1"):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(f"/requests/{request_id}/viewed", headers=headers, data={
        "csrf_token": csrf_from(page), "revision": revision, "viewed": viewed})


def approve_button(page: str) -> str:
    return re.search(r'<button[^>]*id="approve"[^>]*>', page, re.S).group(0)


def rows(app, model, **filters):
    with app.app_context():
        from webapp.extensions import db
        return db.session.execute(db.select(model).filter_by(**filters)).scalars().all()


def test_revisions_come_first_and_approve_waits_for_every_tick(make_app, tmp_path,
                                                               monkeypatch):
    app, url, olga = review_app(make_app, tmp_path, monkeypatch)
    anna = logged_in(app, "anna")
    request_id = new_request(app.test_client(), olga)
    page = page_of(anna, request_id)
    # revisions (headed by message · id, SQL visible, source one click away) before the
    # checks and the decision
    assert page.index('id="review"') < page.index('id="checks"') < page.index('id="decision"')
    for rev in ("r000", "r001", "r002"):
        assert re.search(rf"revision {rev} · <a[^>]*><code>{rev}</code>", page), rev
    assert page.count("<summary>Python source</summary>") == 3
    assert "CREATE TABLE t_r001" in re.sub(r"<[^>]+>", "", page)
    assert "disabled" in approve_button(page)
    assert "0 of 3 revisions viewed" in page
    # the server refuses too, and nothing changes
    forged = anna.post(f"/requests/{request_id}/approve",
                       data={"csrf_token": csrf_from(page), "comment": "lgtm"})
    assert forged.status_code == 409 and "Tick every revision" in forged.get_data(as_text=True)
    assert rows(app, Approval) == [] and version_table(url) == set()
    assert rows(app, AuditEvent, action="request.decide", outcome="denied")
    # no GET writes; an unknown revision is a 400; the requester does not tick
    assert anna.get(f"/requests/{request_id}/viewed").status_code == 405
    assert tick(anna, request_id, "nope", page).status_code == 400
    other = app.test_client()
    add_user(app, "oleg", "approver")
    login(other, "oleg")
    # htmx gets the tick back (and the progress out of band); a plain form goes back
    swapped = tick(anna, request_id, "r000", page, htmx=True)
    assert swapped.status_code == 200
    body = swapped.get_data(as_text=True)
    assert "☑ Viewed" in body and 'hx-swap-oob="true"' in body and "1 of 3" in body
    untick = tick(anna, request_id, "r000", page, htmx=True, viewed="0")
    assert "☐ Viewed" in untick.get_data(as_text=True)
    for rev in ("r000", "r001"):
        assert tick(anna, request_id, rev, page).status_code == 303
    assert "disabled" in approve_button(page_of(anna, request_id))  # r002 not yet
    assert len(rows(app, RequestView, request_id=request_id)) == 2
    assert tick(anna, request_id, "r002", page).status_code == 303
    page = page_of(anna, request_id)
    assert "disabled" not in approve_button(page) and "3 of 3 revisions viewed" in page
    # other approvers' ticks are their own
    assert "disabled" in approve_button(page_of(other, request_id))
    done = anna.post(f"/requests/{request_id}/approve",
                     data={"csrf_token": csrf_from(page), "comment": "read it all"})
    assert done.status_code == 303 and "/jobs/" in done.headers["Location"]
    [approval] = rows(app, Approval)
    assert approval.without_viewing is False
    assert len(rows(app, AuditEvent, action="request.view", outcome="ok")) == 5


def test_approve_without_viewing_is_explicit_and_recorded(make_app, tmp_path, monkeypatch):
    app, url, olga = review_app(make_app, tmp_path, monkeypatch, required=2)
    client = app.test_client()
    request_id = new_request(client, olga)
    anna_api = token_headers(app, "ann2", "approver")
    strict = client.post(f"/api/v1/requests/{request_id}/approve", headers=anna_api,
                         json={"without_viewing": False})
    assert strict.status_code == 409 and strict.json["error"] == "not_reviewed"
    bad = client.post(f"/api/v1/requests/{request_id}/approve", headers=anna_api,
                      json={"without_viewing": "yes"})
    assert bad.status_code == 400 and "without_viewing must be true or false" in \
        bad.json["detail"]
    # a pipeline cannot tick views: its approval counts as without viewing, recorded
    api = client.post(f"/api/v1/requests/{request_id}/approve", headers=anna_api, json={})
    assert api.status_code == 200 and api.json["status"] == "open"
    bert = logged_in(app, "bert")
    page = page_of(bert, request_id)
    answer = bert.post(f"/requests/{request_id}/approve", data={
        "csrf_token": csrf_from(page), "comment": "trusting the rehearsal",
        "without_viewing": "on"})
    assert answer.status_code == 303
    assert all(a.without_viewing for a in rows(app, Approval))
    listed = client.get("/api/v1/requests?all=1", headers=anna_api).json[0]
    assert [a["without_viewing"] for a in listed["approvals"]] == [True, True]
    assert [t["body"] for t in listed["thread"]] == [
        "approved without viewing every revision",
        "approved without viewing every revision: trusting the rehearsal"]
    approved = rows(app, AuditEvent, action="request.approve")
    assert all(json.loads(e.details)["without_viewing"] for e in approved)
    wait_job(client, listed["job"], anna_api)
    assert version_table(url) == {"r002"}


def test_request_changes_then_a_new_plan_then_approve(make_app, tmp_path, monkeypatch):
    app, url, olga = review_app(make_app, tmp_path, monkeypatch)
    client = app.test_client()
    anna_api = token_headers(app, "ann2", "approver")
    request_id = new_request(client, olga)
    anna = logged_in(app, "anna")
    page = page_of(anna, request_id)
    for rev in ("r000", "r001", "r002"):
        tick(anna, request_id, rev, page)
    # a reason is required, through the API and the form; nothing changes without one
    no_reason = client.post(f"/api/v1/requests/{request_id}/request-changes",
                            headers=anna_api, json={})
    assert no_reason.status_code == 400 and "Give a reason to request changes" in \
        no_reason.json["detail"]
    form = anna.post(f"/requests/{request_id}/request-changes",
                     data={"csrf_token": csrf_from(page), "comment": "  "})
    assert form.status_code == 400 and "Give a reason" in form.get_data(as_text=True)
    assert client.get("/api/v1/requests", headers=olga).json[0]["status"] == "open"
    asked = anna.post(f"/requests/{request_id}/request-changes", data={
        "csrf_token": csrf_from(page), "comment": "name needs 80 characters"})
    assert asked.status_code == 303
    assert client.get("/api/v1/requests?awaiting=me", headers=anna_api).json == []
    # the requester sees what to do next and the button; an unchanged plan is refused
    same = client.post(f"/api/v1/requests/{request_id}/new-plan", headers=olga, json={})
    assert same.status_code == 409 and same.json["error"] == "plan_unchanged"
    other = client.post(f"/api/v1/requests/{request_id}/new-plan", headers=anna_api, json={})
    assert other.status_code == 403
    olga_ui = app.test_client()
    add_user(app, "olgau", "operator")
    login(olga_ui, "olgau")
    requester_page = olga_ui.get(f"/requests/{request_id}")
    assert requester_page.status_code == 200  # another operator sees it, without the button
    assert 'id="submit-new-plan"' not in requester_page.get_data(as_text=True)
    path = tmp_path / "env" / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(80)"))
    resubmitted = client.post(f"/api/v1/requests/{request_id}/new-plan", headers=olga,
                              json={"comment": "widened name to 80"})
    assert resubmitted.status_code == 200, resubmitted.json
    data = resubmitted.json
    assert data["status"] == "open" and all(a["void"] for a in data["approvals"])
    assert [(t["author"], t["kind"]) for t in data["thread"]] == [
        ("anna", "decision"), (None, "system"), ("olga", "comment")]
    assert data["thread"][0]["body"] == "requested changes: name needs 80 characters"
    assert "changed r001" in data["thread"][1]["body"]
    # the inbox counts it again; only the changed revision needs a new look
    assert [r["id"] for r in client.get("/api/v1/requests?awaiting=me",
                                        headers=anna_api).json] == [request_id]
    assert sorted(v.revision for v in rows(app, RequestView, request_id=request_id)) == [
        "r000", "r002"]
    page = page_of(anna, request_id)
    assert "2 of 3 revisions viewed" in page and "disabled" in approve_button(page)
    assert tick(anna, request_id, "r001", page).status_code == 303
    page = page_of(anna, request_id)
    done = anna.post(f"/requests/{request_id}/approve",
                     data={"csrf_token": csrf_from(page), "comment": "ok now"})
    assert done.status_code == 303
    job_id = int(done.headers["Location"].rsplit("/", 1)[1])
    assert wait_job(client, job_id, anna_api)["status"] == "succeeded"
    assert version_table(url) == {"r002"}
    [event] = rows(app, AuditEvent, action="request.new_plan", outcome="ok")
    assert json.loads(event.details)["changed"] == ["r001"]


def test_the_requester_is_told_what_to_do_next(make_app, tmp_path, monkeypatch):
    app, url, _ = review_app(make_app, tmp_path, monkeypatch)
    olga = app.test_client()
    add_user(app, "olgau", "operator")
    login(olga, "olgau")
    plan = olga.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    created = olga.post("/targets/prod/requests", data={
        "csrf_token": csrf_from(plan), "command": "upgrade", "revision": "head",
        "plan_hash": re.search(r'name="plan_hash" value="(\w+)"', plan).group(1),
        "reason": "ship"})
    request_id = int(created.headers["Location"].rsplit("/", 1)[1])
    assert 'id="next-step"' not in page_of(olga, request_id)
    anna = logged_in(app, "anna")
    page = page_of(anna, request_id)
    anna.post(f"/requests/{request_id}/request-changes",
              data={"csrf_token": csrf_from(page), "comment": "split r002"})
    mine = page_of(olga, request_id)
    assert 'id="next-step"' in mine and "submit the new plan below" in mine
    assert 'id="submit-new-plan"' in mine and "split r002" in mine
    # a comment in the thread from the requester, then a rejection
    olga.post(f"/requests/{request_id}/comments",
              data={"csrf_token": csrf_from(mine), "comment": "why split?"})
    empty = olga.post(f"/requests/{request_id}/comments",
                      data={"csrf_token": csrf_from(mine), "comment": ""})
    assert empty.status_code == 400
    path = tmp_path / "env" / "versions" / "r002_rev.py"
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(60)"))
    mine_form = olga.post(f"/requests/{request_id}/new-plan",
                          data={"csrf_token": csrf_from(mine), "comment": ""})
    assert mine_form.status_code == 303
    page = page_of(anna, request_id)
    anna.post(f"/requests/{request_id}/reject",
              data={"csrf_token": csrf_from(page), "comment": "not this week"})
    mine = page_of(olga, request_id)
    assert "request approval again" in mine
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", mine))
    order = [text.index(s) for s in ("requested changes: split r002", "why split?",
                                     "New plan submitted by olgau", "rejected: not this week")]
    assert order == sorted(order)


LINTED = [
    Rev("r000", None, "items", upgrade='op.create_table("items", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("name", sa.String(50)), sa.Column("price", sa.Integer))'),
    Rev("r001", "r000", "name not null", upgrade='with op.batch_alter_table("items", '
        'recreate="always") as b: b.alter_column("name", existing_type=sa.String(50), '
        'nullable=False)'),
    Rev("r002", "r001", "drop price", upgrade='with op.batch_alter_table("items") '
        'as b: b.drop_column("price")'),
]


def test_checks_summary_rebuild_note_once_and_never_green_on_a_failed_rehearsal(
        make_app, tmp_path, monkeypatch):
    app, url, olga = review_app(make_app, tmp_path, monkeypatch, revs=LINTED)
    request_id = new_request(app.test_client(), olga)
    anna = logged_in(app, "anna")
    page = page_of(anna, request_id)
    checks = page[page.index('id="checks"'):page.index('id="decision"')]
    assert page.count("SQLite batch mode rebuilds the table") == 1  # once, not per revision
    assert "2 revisions" in checks
    assert 'checks-warnings' in page and "drop column" in checks
    assert "✔" not in checks
    # a failed rehearsal of this plan: the summary says so first, never green
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import ApprovalRequest
        found = db.session.get(ApprovalRequest, request_id)
        db.session.add(Rehearsal(target="prod", command="upgrade", revision="head",
                                 plan_hash=found.plan_hash, passed=False, result=json.dumps(
                                     {"passed": False, "steps": [], "failed_revision": "r002",
                                      "error": "boom", "seconds": 0.1})))
        db.session.commit()
    page = page_of(anna, request_id)
    checks = page[page.index('id="checks"'):page.index('id="decision"')]
    assert "checks-failed" in page and "The rehearsal of this plan failed" in checks
    assert "<code>r002</code>" in checks and "✔" not in checks


def test_checks_summary_names_what_staging_applied(make_app, tmp_path, monkeypatch):
    from datetime import datetime

    from webapp.models import AppliedRevision

    url = sqlite_url(tmp_path / "prod.db")
    monkeypatch.setenv("PROD_URL", url)
    monkeypatch.setenv("STAGE_URL", sqlite_url(tmp_path / "stage.db"))
    ini = make_env(tmp_path / "env", linear(3))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {
        "prod": {"tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
                 "policy": {"approvals_required": 1}},
        "stage": {"tier": "staging", "alembic_ini": str(ini), "url_env": "STAGE_URL"}}))
    olga = token_headers(app, "olga", "operator")
    add_user(app, "anna", "approver")
    request_id = new_request(app.test_client(), olga)
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import ApprovalRequest
        from webapp.services.approvals import plan_from_json
        steps = plan_from_json(db.session.get(ApprovalRequest, request_id).plan).steps
        when = datetime(2026, 12, 1, 12, 0)
        db.session.add_all([
            AppliedRevision(target="stage", revision="r000", sha256=steps[0].sha256,
                            path=steps[0].path, applied_at=when),
            AppliedRevision(target="stage", revision="r001", sha256="0" * 64,
                            path=steps[1].path, applied_at=when)])
        db.session.commit()
    page = page_of(logged_in(app, "anna"), request_id)
    staging = re.sub(r"<[^>]+>", "", re.search(r'<li class="check-staging">(.*?)</li>', page,
                                               re.S).group(1))
    assert staging.split(";") == [
        "Staging: r000 applied on stage 2026-12-01",
        " r001 applied on stage 2026-12-01 with a different file",
        " r002 not on any staging target"]
