"""Issue 17, finding 5 and two items of finding 6: a job runs as its user
only while that user may still run it, and a job that dies or fails says
what it may have left behind.

- an approved request runs as its requester only if the requester is still
  active and still allowed that command on that target when it runs (by the
  requester's POST or at once on approval, ``run_on_approval``); a refusal
  is audited and shown on the request;
- a rollout's next steps run as its creator only while the creator is
  active and allowed; a refused step is audited and says why;
- a job whose process is killed is abandoned with the revision that was
  running named, and a warning that its DDL may be partly applied where
  Alembic's DDL is not transactional;
- transactional DDL is Alembic's own verdict (SQLite's is not): a failing
  job on SQLite warns that the failing revision may be partly applied.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa
from support.common import csrf_from, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.rollouttools import fleet, jobs_per_target, wait_rollout

from webapp.extensions import db
from webapp.models import AuditEvent, Job
from webapp.services import accounts


def protected_app(make_app, tmp_path, monkeypatch, *, run_on_approval: bool):
    """Target "prod" (SQLite, 3 revisions) needing one approval."""
    url = sqlite_url(tmp_path / "prod.db")
    monkeypatch.setenv("PROD_URL", url)
    ini = make_env(tmp_path / "env", linear(3))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"prod": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
        "policy": {"approvals_required": 1, "run_on_approval": run_on_approval}}}))
    return app, url


def job_count(app) -> int:
    with app.app_context():
        return db.session.execute(db.select(db.func.count(Job.id))).scalar()


def audit_events(app, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.execute(db.select(AuditEvent).filter_by(
            action=action)).scalars())


def change_user(app, username: str, *, role: str | None = None,
                active: bool | None = None) -> None:
    """Demote (``role``) or disable (``active=False``) an account, as an admin would."""
    with app.app_context():
        user = accounts.get_user(username)
        if role is not None:
            accounts.set_role(user, role)
        if active is not None:
            accounts.set_active(user, active)


def approved_request(app, client) -> tuple[int, dict]:
    """olga (operator) asks for ``upgrade head`` on prod; anna approves it."""
    olga = token_headers(app, "olga", "operator")
    anna = token_headers(app, "anna", "approver")
    posted = client.post("/api/v1/targets/prod/jobs", headers=olga, json={
        "command": "upgrade", "revision": "head", "reason": "release 1"})
    assert posted.status_code == 202, posted.json
    return posted.json["request"], anna


def test_demoted_requester_cannot_run_the_approved_request(make_app, tmp_path, monkeypatch):
    app, url = protected_app(make_app, tmp_path, monkeypatch, run_on_approval=False)
    client = app.test_client()
    request_id, anna = approved_request(app, client)
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=anna, json={})
    assert approved.json["status"] == "approved" and "job" not in approved.json
    change_user(app, "olga", role="viewer")  # demoted after the approval
    ui = app.test_client()
    login(ui, "olga")  # a viewer still sees the request and its Run button's form
    page = ui.get(f"/requests/{request_id}").get_data(as_text=True)
    refused = ui.post(f"/requests/{request_id}/run", data={"csrf_token": csrf_from(page)})
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert "viewer" in refused.get_data(as_text=True)
    assert job_count(app) == 0 and version_table(url) == set()
    events = audit_events(app, "request.run")
    assert events and events[-1].outcome == "refused" and "olga" in events[-1].details
    shown = ui.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "Not run" in shown and "viewer" in shown


def test_disabled_requester_approval_does_not_start_the_job(make_app, tmp_path, monkeypatch):
    app, url = protected_app(make_app, tmp_path, monkeypatch, run_on_approval=True)
    client = app.test_client()
    request_id, anna = approved_request(app, client)
    change_user(app, "olga", active=False)  # left the company before the approval
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=anna, json={})
    assert approved.status_code == 200, approved.json
    assert "job" not in approved.json and approved.json["status"] == "approved"
    assert "disabled" in approved.json["note"], approved.json
    time.sleep(1)  # a job process, had one started, would have written by now
    assert job_count(app) == 0 and version_table(url) == set()
    listed = {r["id"]: r for r in client.get("/api/v1/requests", headers=anna).json}
    assert "disabled" in listed[request_id]["note"], listed[request_id]
    events = audit_events(app, "request.run")
    assert events and events[-1].outcome == "refused" and "disabled" in events[-1].details


def rollout_app(make_app, tmp_path, monkeypatch):
    """Two tenants; olga (operator) creates a paused rollout over both."""
    app = make_app(fleet(tmp_path, monkeypatch, ["tenant-00", "tenant-01"]))
    client = app.test_client()
    olga = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=olga, json={
        "command": "upgrade", "revision": "head", "tag": "tenant", "batch_size": 1,
        "stop_on_failure": False, "paused": True})
    assert posted.status_code == 202, posted.json
    return app, client, posted.json["id"]


def _refused_rollout(app, client, rollout_id: int) -> dict:
    otto = token_headers(app, "otto", "operator")  # another operator resumes it
    resumed = client.post(f"/api/v1/rollouts/{rollout_id}/resume", headers=otto)
    assert resumed.status_code == 200, resumed.json
    done = wait_rollout(client, rollout_id, otto, timeout=60)
    assert done["status"] == "failed", done
    assert [s["status"] for s in done["steps"]] == ["failed", "failed"]
    assert all(s["job"] is None for s in done["steps"])
    assert jobs_per_target(app) == {}
    ends = [e for e in audit_events(app, "rollout.step.end") if e.outcome == "failed"]
    assert len(ends) == 2 and all("olga" in e.details for e in ends)
    return done


def test_disabled_rollout_creator_runs_no_further_steps(make_app, tmp_path, monkeypatch):
    app, client, rollout_id = rollout_app(make_app, tmp_path, monkeypatch)
    change_user(app, "olga", active=False)
    done = _refused_rollout(app, client, rollout_id)
    assert all("olga" in s["note"] and "disabled" in s["note"] for s in done["steps"]), done


def test_demoted_rollout_creator_runs_no_further_steps(make_app, tmp_path, monkeypatch):
    app, client, rollout_id = rollout_app(make_app, tmp_path, monkeypatch)
    change_user(app, "olga", role="viewer")
    done = _refused_rollout(app, client, rollout_id)
    assert all("olga" in s["note"] and "viewer" in s["note"] for s in done["steps"]), done
    ui = app.test_client()
    login(ui, "otto")
    page = ui.get(f"/rollouts/{rollout_id}").get_data(as_text=True)
    assert "olga" in page and "viewer" in page


def slow_second_revision(make_app, tmp_path, monkeypatch):
    """r000 creates a table, r001 creates one and then sleeps a minute: a job
    of ``upgrade heads`` is started and followed until r001 has begun."""
    url = sqlite_url(tmp_path / "slow.db")
    monkeypatch.setenv("SLOW_URL", url)
    ini = make_env(tmp_path / "env", [
        Rev("r000", None),
        Rev("r001", "r000", upgrade='op.create_table("t_half", sa.Column("id", sa.Integer, '
                                    'primary_key=True)); import time; time.sleep(60)')])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"slow": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SLOW_URL"}}))
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/slow/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "heads"})
    job_id = posted.json["job"]
    deadline = time.monotonic() + 30
    while "upgrade r000 done" not in client.get(f"/api/v1/jobs/{job_id}",
                                                headers=headers).json["log"]:
        assert time.monotonic() < deadline, "r000 never finished"
        time.sleep(0.3)
    time.sleep(2)  # r001 has begun, and its start is in the job's log
    with app.app_context():
        pid = db.session.get(Job, job_id).worker_pid
    return app, client, headers, url, job_id, pid


@pytest.mark.job_process
def test_killed_job_names_the_revision_that_was_running(make_app, tmp_path, monkeypatch):
    """The job's process is SIGKILLed during r001: the reaper finds it gone,
    and the abandoned job names r001 and warns of partly applied DDL."""
    app, client, headers, url, job_id, pid = slow_second_revision(make_app, tmp_path,
                                                                   monkeypatch)
    os.kill(pid, signal.SIGKILL)
    job = wait_job(client, job_id, headers, timeout=30)
    assert job["status"] == "abandoned"
    assert "r001" in job["error"] and "running" in job["error"], job["error"]
    assert "may be partly applied" in job["error"], job["error"]
    assert version_table(url) == {"r000"}
    ui = app.test_client()
    token_headers(app, "vi", "viewer")
    login(ui, "vi")
    page = ui.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "r001" in page and "may be partly applied" in page


@pytest.mark.job_process
def test_killed_migration_process_names_the_revision_that_was_running(make_app, tmp_path,
                                                                       monkeypatch):
    """The migration process (the job process's child) is SIGKILLed during
    r001: the job process records it abandoned, naming r001."""
    app, client, headers, url, job_id, pid = slow_second_revision(make_app, tmp_path,
                                                                   monkeypatch)
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGKILL)
    job = wait_job(client, job_id, headers, timeout=30)
    assert job["status"] == "abandoned"
    assert "r001" in job["error"] and "may be partly applied" in job["error"], job["error"]


def test_failing_job_on_sqlite_warns_of_partial_ddl(make_app, tmp_path, monkeypatch):
    """SQLite's DDL is not transactional for Alembic (SQLiteImpl.transactional_ddl
    is False): the table r001 created before its second statement failed stays."""
    url = sqlite_url(tmp_path / "f.db")
    monkeypatch.setenv("F_URL", url)
    revs = linear(2)
    revs[1].upgrade = ('op.create_table("half_done", sa.Column("id", sa.Integer, '
                       'primary_key=True)); op.execute("SELECT * FROM no_such_table")')
    ini = make_env(tmp_path / "env", revs)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"f": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "F_URL"}}))
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    ui = app.test_client()
    login(ui, "op")
    plan = ui.get("/targets/f/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert "sqlite DDL is not transactional" in plan
    posted = client.post("/api/v1/targets/f/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "failed" and job["failed_revision"] == "r001"
    assert "may be partly applied" in job["report"] and "r001" in job["report"], job["report"]
    assert "stayed applied: r000" in job["report"]
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).has_table("half_done")  # the warning is true
    finally:
        engine.dispose()


def test_queue_worker_refuses_a_job_whose_user_was_disabled(make_app, tmp_path, monkeypatch):
    """A job waits in the queue; its user is disabled meanwhile: the worker
    that takes it (``run_queued``, here in this process) runs nothing."""
    from webapp.models import JobStatus, utcnow
    from webapp.services import job_process
    from webapp.services.catalog import get_catalog

    url = sqlite_url(tmp_path / "q.db")
    monkeypatch.setenv("Q_URL", url)
    ini = make_env(tmp_path / "env", linear(2))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"q": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "Q_URL"}}))
    token_headers(app, "olga", "operator")
    with app.app_context():
        job = Job(target="q", command="upgrade", revision="head",
                  user_id=accounts.get_user("olga").id, plan_hash="x" * 64,
                  status=JobStatus.QUEUED, current_before="", planned_revisions="r000 r001",
                  dialect="sqlite", heartbeat_at=utcnow())
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    change_user(app, "olga", active=False)
    with app.app_context():
        job_process.run_queued(job_id, get_catalog())
        job = db.session.get(Job, job_id)
        assert job.status == JobStatus.FAILED, (job.status, job.error, job.log)
        assert "olga" in job.error and "disabled" in job.error
    assert version_table(url) == set()
    refused = [e for e in audit_events(app, "job.start") if e.outcome == "refused"]
    assert refused and "disabled" in refused[0].details
