"""Jobs on a real Celery queue with the real Redis: a worker beside each
database runs only its queue's jobs; a lost worker's job is abandoned, never
run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.common import IN_CI, add_user
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY = Path(sys.executable).with_name("celery")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def broker_url():
    """The real Redis (skipped without it, a failure in CI)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"Redis is required in CI: {exc}")
        pytest.skip(f"Redis unavailable: {exc}")
    return REDIS_URL


class Workers:
    """Start real ``celery -A webapp.tasks worker`` processes for a test."""

    def __init__(self, env: dict, log_dir: Path) -> None:
        self.env, self.log_dir, self.procs = env, log_dir, []

    def start(self, queue: str) -> subprocess.Popen:
        log = open(self.log_dir / f"celery-{queue}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(CELERY), "-A", "webapp.tasks", "worker", "-Q", queue, "--concurrency", "1",
             "--pool", "prefork", "-n", f"{queue}@%h", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
            cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool processes (a lost host)."""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs:
            self.kill(proc)


@pytest.fixture
def queued_app(make_app, tmp_path, monkeypatch, broker_url, instance_path):
    """App sending jobs to Redis; targets "east" and "west" on their own
    queues; a factory for workers sharing the app's database and targets."""
    east_q, west_q = f"east-{uuid.uuid4().hex[:8]}", f"west-{uuid.uuid4().hex[:8]}"
    east_ini = make_env(tmp_path / "east", [
        Rev("r000", None), Rev("r001", "r000", upgrade="import time; time.sleep(30)",
                               downgrade="pass")])
    west_ini = make_env(tmp_path / "west", linear(2))
    urls = {"EAST_URL": sqlite_url(tmp_path / "east.db"),
            "WEST_URL": sqlite_url(tmp_path / "west.db")}
    for name, value in urls.items():
        monkeypatch.setenv(name, value)
    targets = write_targets_file(tmp_path / "targets.toml", {
        "east": {"tier": "staging", "alembic_ini": str(east_ini), "url_env": "EAST_URL",
                 "queue": east_q},
        "west": {"tier": "staging", "alembic_ini": str(west_ini), "url_env": "WEST_URL",
                 "queue": west_q}})
    app = make_app(targets, BROKER_URL=broker_url)
    add_user(app, "alice", "admin")
    env = {**os.environ, **urls, "DASHBOARD_BROKER_URL": broker_url,
           "DASHBOARD_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "DASHBOARD_TARGETS": str(targets), "DASHBOARD_SECRET_KEY": "test-secret",
           "DASHBOARD_INSTANCE_PATH": str(instance_path)}
    workers = Workers(env, tmp_path)
    try:
        yield app, workers, east_q, west_q, urls
    finally:
        workers.stop_all()


def standbys_under(root_pid: int) -> set[int]:
    """Pids of waiting agent processes (``--standby``) descended from ``root_pid``."""
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if b"--standby" in argv:
            found.add(int(entry.name))

    def descends(pid: int) -> bool:
        while pid in parents and pid > 1:
            if pid == root_pid:
                return True
            pid = parents[pid]
        return False

    return {pid for pid in found if descends(pid)}


def status_of(client, job_id: int, headers: dict) -> dict:
    return client.get(f"/api/v1/jobs/{job_id}", headers=headers).json


def test_each_queue_runs_on_its_own_worker(queued_app):
    app, workers, east_q, west_q, urls = queued_app
    client = app.test_client()  # a pipeline: bearer token, no session
    headers = token_headers(app, "pipeline", "operator")
    workers.start(east_q)
    posted = client.post("/api/v1/targets/west/jobs", json={"command": "upgrade",
                                                             "revision": "heads"},
                         headers=headers)
    assert posted.status_code == 202, posted.json
    west_job = posted.json["job"]
    time.sleep(6)  # the east worker is up; the west job waits for its own worker
    job = status_of(client, west_job, headers)
    assert job["status"] == "queued" and version_table(urls["WEST_URL"]) == set()
    # a job nobody has taken yet can be cancelled; the target is free again
    cancelled = client.post(f"/api/v1/jobs/{west_job}/cancel", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "abandoned"
    assert "Cancelled by pipeline" in cancelled.json["error"]
    again = client.post(f"/api/v1/jobs/{west_job}/cancel", headers=headers)
    assert again.status_code == 409
    posted = client.post("/api/v1/targets/west/jobs", json={"command": "upgrade",
                                                             "revision": "heads"},
                         headers=headers)
    assert posted.status_code == 202, posted.json
    cancelled_job, west_job = west_job, posted.json["job"]
    west = workers.start(west_q)
    job = wait_job(client, west_job, headers, timeout=60)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(urls["WEST_URL"]) == {"r001"}
    assert "Running upgrade r000 -> r001" in job["log"]
    # the warm worker has an agent waiting (past Python's start-up) for the next
    # job like this one; that job runs in it, and a new one waits afterwards
    deadline = time.monotonic() + 10
    while not (standby := standbys_under(west.pid)):
        assert time.monotonic() < deadline, "no standby agent after the first job"
        time.sleep(0.2)
    down = client.post("/api/v1/targets/west/jobs", json={"command": "downgrade",
                                                           "revision": "-1"}, headers=headers)
    assert down.status_code == 202, down.json
    job = wait_job(client, down.json["job"], headers, timeout=60)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(urls["WEST_URL"]) == {"r000"}
    deadline = time.monotonic() + 10
    while not (after := standbys_under(west.pid)) or after & standby:
        assert time.monotonic() < deadline, (standby, after)
        time.sleep(0.2)
    # the worker took the cancelled job's message too, and left it alone
    job = status_of(client, cancelled_job, headers)
    assert job["status"] == "abandoned" and job["log"] == "" and job["started_at"] is None


def test_lost_worker_abandons_the_job_and_never_reruns_it(queued_app):
    app, workers, east_q, west_q, urls = queued_app
    client = app.test_client()
    headers = token_headers(app, "pipeline", "operator")
    east = workers.start(east_q)
    posted = client.post("/api/v1/targets/east/jobs", json={"command": "upgrade",
                                                             "revision": "heads"},
                         headers=headers)
    assert posted.status_code == 202, posted.json
    job_id = posted.json["job"]
    deadline = time.monotonic() + 60
    while "Running upgrade r000 -> r001" not in status_of(client, job_id, headers)["log"]:
        assert time.monotonic() < deadline, status_of(client, job_id, headers)
        time.sleep(0.5)
    workers.kill(east)  # the host running the migration is lost mid-run
    deadline = time.monotonic() + 30
    while status_of(client, job_id, headers)["status"] != "abandoned":
        assert time.monotonic() < deadline, status_of(client, job_id, headers)
        time.sleep(1)
    assert version_table(urls["EAST_URL"]) == {"r000"}
    workers.start(east_q)  # a new worker on the same queue must not run it again
    time.sleep(6)
    job = status_of(client, job_id, headers)
    assert job["status"] == "abandoned"
    assert version_table(urls["EAST_URL"]) == {"r000"}
    assert job["log"].count("Running upgrade r000 -> r001") == 1
