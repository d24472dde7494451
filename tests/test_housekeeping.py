"""Housekeeping (reaping, expiry, ended rollout steps) is not a GET's job:
``flask housekeeping`` does it for cron, and the read functions only reach
its throttled fallback (at most once per 2 s per app)."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

from support.common import add_user
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers


def _app(make_app, tmp_path, monkeypatch):
    monkeypatch.setenv("HK_URL", sqlite_url(tmp_path / "hk.db"))
    ini = make_env(tmp_path / "env", linear(1))
    return make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "HK_URL"}}))


def _job_of_a_dead_process(app) -> int:
    """A running job (holding its target's guard) whose process on this host
    has exited."""
    from webapp.extensions import db
    from webapp.models import Job, JobStatus, TargetGuard, utcnow
    from webapp.services.liveness import process_start_token

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    token = process_start_token(proc.pid)
    proc.kill()
    proc.wait()
    with app.app_context():
        job = Job(target="shop", command="upgrade", revision="head", plan_hash="0" * 64,
                  status=JobStatus.RUNNING, worker_pid=proc.pid, worker_start=token,
                  worker_host=socket.gethostname()[:255], heartbeat_at=utcnow())
        db.session.add(job)
        db.session.flush()
        db.session.add(TargetGuard(target="shop", job_id=job.id))
        db.session.commit()
        return job.id


def _job(app, job_id: int):
    from webapp.extensions import db
    from webapp.models import Job, TargetGuard

    with app.app_context():
        job = db.session.get(Job, job_id)
        return job.status, job.error, db.session.get(TargetGuard, "shop")


def test_flask_housekeeping_reaps_and_expires_without_any_get(make_app, tmp_path,
                                                              monkeypatch):
    from webapp.extensions import db
    from webapp.models import ApprovalRequest, utcnow
    from webapp.services.accounts import get_user

    app = _app(make_app, tmp_path, monkeypatch)
    add_user(app, "olga", "operator")
    job_id = _job_of_a_dead_process(app)
    with app.app_context():
        stale = ApprovalRequest(target="shop", command="upgrade", revision="head",
                                plan_hash="0" * 64, plan="{}", reason="r",
                                requester_id=get_user("olga").id,
                                expires_at=utcnow() - timedelta(seconds=1))
        db.session.add(stale)
        db.session.commit()
        request_id = stale.id
    assert _job(app, job_id)[0] == "running"
    result = app.test_cli_runner().invoke(args=["housekeeping"])
    assert result.exit_code == 0, result.output
    assert f"abandoned jobs: {job_id};" in result.output
    assert f"expired requests: {request_id};" in result.output
    status, error, guard = _job(app, job_id)
    assert status == "abandoned" and "gone" in error and guard is None
    with app.app_context():
        assert db.session.get(ApprovalRequest, request_id).status == "expired"
    again = app.test_cli_runner().invoke(args=["housekeeping"])
    assert "abandoned jobs: none; expired requests: none" in again.output


def test_a_get_reaches_housekeeping_only_through_the_throttle(make_app, tmp_path,
                                                             monkeypatch):
    """The job's page still shows a dead job abandoned (through the
    fallback), but two reads within the interval run the housekeeping once."""
    from webapp.services import housekeeping

    app = _app(make_app, tmp_path, monkeypatch)
    headers = token_headers(app, "pipeline", "viewer")
    client = app.test_client()
    monkeypatch.setattr(housekeeping, "FALLBACK_INTERVAL", 3600)
    first = _job_of_a_dead_process(app)
    assert client.get(f"/api/v1/jobs/{first}", headers=headers).json["status"] == "abandoned"
    second = _job_of_a_dead_process(app)
    assert client.get(f"/api/v1/jobs/{second}", headers=headers).json["status"] == "running"
    app.extensions[housekeeping.EXTENSION].last = float("-inf")  # the interval is over
    assert client.get(f"/api/v1/jobs/{second}", headers=headers).json["status"] == "abandoned"
