"""A job's end and a request's end are events (webapp.services.events): the
services that end them send, rollouts subscribe once from create_app, and
every app a process creates leaves each handler connected once."""

from __future__ import annotations

from datetime import timedelta

from support.common import add_user
from support.envtools import linear, make_env, sqlite_url, write_targets_file


def _app(make_app, tmp_path, monkeypatch):
    monkeypatch.setenv("EV_URL", sqlite_url(tmp_path / "ev.db"))
    ini = make_env(tmp_path / "env", linear(1))
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "EV_URL"}})
    make_app(targets)
    app = make_app(targets)  # create_app twice in one process: subscribed once
    add_user(app, "olga", "operator")
    return app


def _recorders(monkeypatch):
    from webapp.services import rollout_advance

    calls: list[tuple] = []
    monkeypatch.setattr(rollout_advance, "job_finished",
                        lambda job, catalog: calls.append(("job", job.id)))
    monkeypatch.setattr(rollout_advance, "request_ended",
                        lambda request_id, catalog, may_start=True:
                        calls.append(("request", request_id, may_start)))
    return calls


def test_cancelling_a_queued_job_sends_job_finished_once(make_app, tmp_path, monkeypatch):
    from webapp.extensions import db
    from webapp.models import Job, JobStatus
    from webapp.services import audit, events, jobs, rollout_advance
    from webapp.services.accounts import get_user

    app = _app(make_app, tmp_path, monkeypatch)
    rollout_advance.subscribe()  # once more: still one connection
    calls = _recorders(monkeypatch)
    seen = []
    with app.app_context(), events.job_finished.connected_to(
            lambda job, **kw: seen.append((job.status, sorted(kw)))):
        job = Job(target="shop", command="upgrade", revision="head", plan_hash="0" * 64,
                  status=JobStatus.QUEUED)
        db.session.add(job)
        db.session.commit()
        jobs.cancel_queued(job.id, get_user("olga"), audit.Actor("olga", "test"))
        assert calls == [("job", job.id)]
        assert seen == [("abandoned", ["catalog"])]

def test_withdraw_and_expiry_send_request_ended(make_app, tmp_path, monkeypatch):
    from webapp.extensions import db
    from webapp.models import ApprovalRequest, utcnow
    from webapp.services import approvals, audit
    from webapp.services.accounts import get_user

    app = _app(make_app, tmp_path, monkeypatch)
    calls = _recorders(monkeypatch)
    with app.app_context():
        user = get_user("olga")
        withdrawn, stale = (ApprovalRequest(
            target="shop", command="upgrade", revision="head", plan_hash="0" * 64,
            plan="{}", requester_id=user.id, reason="r", expires_at=utcnow() + delta)
            for delta in (timedelta(hours=1), timedelta(seconds=-1)))
        db.session.add(withdrawn)
        db.session.commit()
        approvals.withdraw(withdrawn.id, user, audit.Actor("olga", "test"))
        db.session.add(stale)
        db.session.commit()
        assert approvals.expire_requests() == [stale.id]
        # a withdrawal may start the rollout's next steps; an expiry (maybe
        # during a GET) only records its step's end
        assert calls == [("request", withdrawn.id, True), ("request", stale.id, False)]
