"""A job is abandoned only when its process is provably gone: a starved or
paused job process is never declared dead, a killed one is found quickly,
and a finished job never changes state again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.agent.alembic_dashboard_agent.locks import TargetLock
from webapp.core.target_locks import migration_lock_held
from webapp.services import liveness

# the subject is the job's own process (see make_app in conftest.py)
pytestmark = pytest.mark.job_process

SLEEPY = "import time; time.sleep({seconds})"


def sleepy_env(root, seconds: float):
    """r000 creates a table, r001 takes ``seconds`` to run."""
    return make_env(root, [Rev("r000", None),
                           Rev("r001", "r000", upgrade=SLEEPY.format(seconds=seconds),
                               downgrade="pass")])


def worker_pid(app, job_id: int) -> int:
    from webapp.extensions import db
    from webapp.models import Job

    with app.app_context():
        return db.session.get(Job, job_id).worker_pid


def poll_statuses(client, job_id: int, headers: dict, timeout: float) -> list[str]:
    """Every status seen (each poll also runs the reaper) until the job ends."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["status"]
        seen.append(status)
        if status not in ("queued", "running"):
            return seen
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {seen[-1]} after {timeout} s")


@pytest.fixture
def sleepy_app(make_app, tmp_path, monkeypatch):
    """App with target "slow" (SQLite): upgrade heads takes ~40 s."""
    return sleepy(make_app, tmp_path, monkeypatch, 40)


def sleepy(make_app, tmp_path, monkeypatch, seconds: float):
    """``(app, client logged in as an admin, url)``: target "slow" (SQLite)
    whose upgrade heads takes ``seconds``."""
    ini = sleepy_env(tmp_path / "env", seconds)
    url = sqlite_url(tmp_path / "slow.db")
    monkeypatch.setenv("SLOW_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"slow": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SLOW_URL"}}))
    add_user(app, "alice", "admin")
    client = app.test_client()
    login(client, "alice")
    return app, client, url


@pytest.mark.alone
def test_busy_cpus_and_a_paused_job_process_never_abandon_a_job(make_app, tmp_path,
                                                                monkeypatch):
    """Both cores busy for the whole job (~10 s) and the job's process paused
    (SIGSTOP) for 5 s — twice the heartbeat timeout, cut to 2.5 s here —
    mid-run: the job is never declared abandoned and ends succeeded."""
    monkeypatch.setattr(liveness, "HEARTBEAT_TIMEOUT", timedelta(seconds=2.5))
    app, client, url = sleepy(make_app, tmp_path, monkeypatch, 8)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(os.cpu_count() or 2)]
    try:
        headers = token_headers(app, "pipeline", "operator")
        posted = client.post("/api/v1/targets/slow/jobs",
                             json={"command": "upgrade", "revision": "heads"}, headers=headers)
        assert posted.status_code == 202, posted.json
        job_id = posted.json["job"]
        pid = worker_pid(app, job_id)
        time.sleep(3)
        # The pause ends on its own clock, as a real one would, not after our
        # polls: a poll may have to wait for a dashboard-database lock the
        # paused process holds (a writer paused in its transaction).
        resume = threading.Timer(5, os.kill, (pid, signal.SIGCONT))
        os.kill(pid, signal.SIGSTOP)
        resume.start()
        try:
            paused = poll_statuses_for(client, job_id, headers, 5)
        finally:
            resume.join()
        seen = paused + poll_statuses(client, job_id, headers, 90)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert "abandoned" not in seen, seen
    assert seen[-1] == "succeeded"
    assert version_table(url) == {"r001"}


def poll_statuses_for(client, job_id: int, headers: dict, seconds: float) -> list[str]:
    """Statuses seen while polling once a second for ``seconds``."""
    seen, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["status"])
        time.sleep(1)
    return seen


def test_killed_job_process_is_abandoned_quickly_and_stays_so(sleepy_app):
    app, client, url = sleepy_app
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/slow/jobs",
                         json={"command": "upgrade", "revision": "heads"}, headers=headers)
    job_id = posted.json["job"]
    time.sleep(3)
    os.kill(worker_pid(app, job_id), signal.SIGKILL)
    killed_at = time.monotonic()
    seen = poll_statuses(client, job_id, headers, 30)
    assert seen[-1] == "abandoned" and time.monotonic() - killed_at < 30
    job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
    assert "gone" in job["error"]
    time.sleep(2)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["status"] == "abandoned"


def test_other_host_job_lives_while_its_lock_is_held(sleepy_app, monkeypatch):
    """For a job run on another host the reaper cannot see the process: a
    silent heartbeat alone is not enough, the target's migration lock must be
    free too."""
    from webapp.extensions import db
    from webapp.models import Job
    from webapp.services import liveness

    app, client, url = sleepy_app
    monkeypatch.setattr(liveness, "HEARTBEAT_TIMEOUT", liveness.timedelta(seconds=3))
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/slow/jobs",
                         json={"command": "upgrade", "revision": "heads"}, headers=headers)
    job_id = posted.json["job"]
    pid = worker_pid(app, job_id)
    with app.app_context():
        db.session.get(Job, job_id).worker_host = "another-host"
        db.session.commit()
    deadline = time.monotonic() + 20
    while "Running upgrade r000 -> r001" not in client.get(
            f"/api/v1/jobs/{job_id}", headers=headers).json["log"]:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    os.kill(pid, signal.SIGSTOP)  # no more heartbeats; the migration holds the lock
    try:
        seen = poll_statuses_for(client, job_id, headers, 8)
        assert set(seen) == {"running"}, seen
    finally:
        os.kill(pid, signal.SIGKILL)  # the migration dies with it: the lock is freed
    seen = poll_statuses(client, job_id, headers, 20)
    assert seen[-1] == "abandoned"
    assert "lock is free" in client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["error"]
    assert version_table(url) == {"r000"}


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_migration_lock_held_reads_the_agents_lock(dialect, tmp_path, request):
    import sqlalchemy as sa

    url = sqlite_url(tmp_path / "l.db") if dialect == "sqlite" else \
        request.getfixturevalue("mysql_url" if dialect == "mysql" else "pg_url")
    engine = sa.create_engine(url)
    try:
        assert migration_lock_held(engine, "shop") is False
        lock = TargetLock(url, "shop")
        lock.acquire()
        try:
            assert migration_lock_held(engine, "shop") is True
            if dialect != "sqlite":  # SQLite locks the file, whatever the target's name
                assert migration_lock_held(engine, "other-target") is False
        finally:
            lock.release()
        assert migration_lock_held(engine, "shop") is False
    finally:
        engine.dispose()


def test_finished_job_never_changes_state(sleepy_app):
    """A late outcome (the process ends after the job was declared abandoned)
    goes to the log; the status stays."""
    from webapp.extensions import db
    from webapp.models import Job, JobStatus
    from webapp.services import job_process

    app, client, url = sleepy_app
    with app.app_context():
        job = Job(target="slow", command="upgrade", revision="heads", plan_hash="x",
                  status=JobStatus.ABANDONED)
        db.session.add(job)
        db.session.commit()
        status = job_process._finish(job.id, {"ok": True, "applied": ["r000"],
                                              "current_after": ["r000"]}, "late output\n", url)
        db.session.commit()
        db.session.refresh(job)
        assert status == job.status == "abandoned"
        assert "declared finished" in job.log and job.applied_revisions == ""


def test_job_process_that_cannot_start_the_app_fails_the_job_not_abandons_it(
        make_app, tmp_path, monkeypatch):
    """The targets file is edited into an invalid one while the dashboard runs:
    the next job's process cannot create the app. The job says so (failed,
    with the reason), its guard is freed, and the migration was stopped:
    r001 takes 60 s while the marker file exists, so it can only be missing
    from the version table if the job process stopped it (not a race with a
    2 s sleep, which a loaded machine lost)."""
    slow = tmp_path / "slow"
    slow.touch()
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev(
        "r001", "r000", downgrade="pass",
        upgrade=f"import os, time; time.sleep(60 if os.path.exists({str(slow)!r}) else 0)")])
    url = sqlite_url(tmp_path / "t.db")
    monkeypatch.setenv("T_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL"}})
    app = make_app(targets)
    headers = token_headers(app, "pipeline", "operator")
    targets.write_text(targets.read_text().replace('tier = "staging"', 'tier = "prod"'))
    client = app.test_client()
    posted = client.post("/api/v1/targets/t/jobs", json={"command": "upgrade",
                                                          "revision": "heads"}, headers=headers)
    assert posted.status_code == 202, posted.json
    job_id = posted.json["job"]
    seen = poll_statuses(client, job_id, headers, timeout=60)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
    assert seen[-1] == "failed" and "abandoned" not in seen, (seen, job["error"])
    assert "The job process failed (TargetsFileError" in job["error"]
    assert "must be one of development, staging, production" in job["error"]
    assert "[dashboard] The job process failed" in job["log"]
    assert version_table(url) <= {"r000"}  # r001 never completed
    targets.write_text(targets.read_text().replace('tier = "prod"', 'tier = "staging"'))
    slow.unlink()
    again = client.post("/api/v1/targets/t/jobs", json={"command": "upgrade",
                                                         "revision": "heads"}, headers=headers)
    assert again.status_code == 202, again.json  # the guard was freed
    assert wait_job(client, again.json["job"], headers)["status"] == "succeeded"
    assert version_table(url) == {"r001"}


def test_a_released_lock_is_free_at_once(mysql_url):
    """``TargetLock.release`` gives the lock back on the server before it
    closes the session: closing alone leaves it held until the server has
    processed the disconnect, and a liveness check in that moment saw a
    finished job's lock as held (seen in 4 of 200 tries on MariaDB)."""
    import sqlalchemy as sa

    url = mysql_url
    engine = sa.create_engine(url)
    try:
        held = 0
        for _ in range(150):
            lock = TargetLock(url, "shop")
            lock.acquire()
            lock.release()
            held += bool(migration_lock_held(engine, "shop"))
        assert held == 0, f"held right after release in {held} of 150 tries"
    finally:
        engine.dispose()
