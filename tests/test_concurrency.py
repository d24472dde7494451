"""Real gunicorn: one job per target under 20 simultaneous requests, and a
job process killed with SIGKILL mid-migration."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from support.common import ROOT
from support.envtools import linear, make_env, write_targets_file
from support.jobtools import version_table


def api(base: str, token: str, method: str, path: str, body: dict | None = None):
    """(status, JSON) of one API call."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve(gunicorn_server, tmp_path, url: str, revs, workers: int = 3):
    ini = make_env(tmp_path / "env", revs)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "CONC_URL"}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets), "CONC_URL": url},
                           workers=workers)
    token = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-token",
                            "admin"], cwd=ROOT, env=gunicorn_server.env, check=True,
                           capture_output=True, text=True).stdout.strip()
    return base, token


def wait_status(base, token, job_id, wanted, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = api(base, token, "GET", f"/api/v1/jobs/{job_id}")
        if job["status"] in wanted:
            return job, time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


def test_twenty_simultaneous_posts_start_exactly_one_job(gunicorn_server, tmp_path, mysql_url):
    revs = linear(3)
    revs[1].upgrade = "import time; time.sleep(0 if op.get_context().as_sql else 6)"
    base, token = serve(gunicorn_server, tmp_path, mysql_url, revs, workers=3)

    def post(_):
        return api(base, token, "POST", "/api/v1/targets/shop/jobs",
                   {"command": "upgrade", "revision": "head"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(post, range(20)))
    accepted = [body for status, body in results if status == 202]
    busy = [body for status, body in results if status == 409]
    up_to_date = [body for status, body in results if status == 200]
    assert len(accepted) == 1, results
    job_id = accepted[0]["job"]
    # every other request gets 409: the target is busy (naming the job), or,
    # for a plan computed before the job moved the database, "plan changed";
    # one planned after the job ended finds the database up to date (200)
    assert len(busy) + len(up_to_date) == 19, results
    assert all(body["status"] == "up_to_date" for body in up_to_date), results
    for body in busy:
        assert body["error"] in ("busy", "plan_changed"), body
        if body["error"] == "busy":
            assert body["job"] == job_id
    assert sum(body["error"] == "busy" for body in busy) >= 1
    job, _ = wait_status(base, token, job_id, ("succeeded", "failed"), 90)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(mysql_url) == {"r002"} == set(job["to"])


def test_sigkill_mid_migration_releases_lock_and_abandons_job(gunicorn_server, tmp_path,
                                                             mysql_url):
    flag = tmp_path / "slow.flag"
    flag.write_text("sleep")
    revs = linear(3)
    revs[1].upgrade = ("import os, time; time.sleep(120 if os.path.exists("
                       f"{str(flag)!r}) and not op.get_context().as_sql else 0)")
    base, token = serve(gunicorn_server, tmp_path, mysql_url, revs, workers=2)
    status, body = api(base, token, "POST", "/api/v1/targets/shop/jobs",
                       {"command": "upgrade", "revision": "head"})
    assert status == 202
    job_id = body["job"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, job = api(base, token, "GET", f"/api/v1/jobs/{job_id}")
        if "Running upgrade r000 -> r001" in job["log"]:
            break
        time.sleep(0.3)
    assert job["status"] == "running"
    db_path = os.path.join(gunicorn_server.env["DASHBOARD_INSTANCE_PATH"], "dashboard.db")
    with sqlite3.connect(db_path) as conn:
        pid = conn.execute("SELECT worker_pid FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    job, seen_at = wait_status(base, token, job_id, ("abandoned", "failed", "succeeded"), 40)
    assert job["status"] == "abandoned"
    assert seen_at - killed_at < 30
    assert version_table(mysql_url) == {"r000"}  # the database's real state
    # the database released the lock with the dead session: a new job runs
    flag.unlink()
    status, body = api(base, token, "POST", "/api/v1/targets/shop/jobs",
                       {"command": "upgrade", "revision": "head"})
    assert status == 202, body
    job, _ = wait_status(base, token, body["job"], ("succeeded", "failed", "abandoned"), 60)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(mysql_url) == {"r002"}
    _, targets = api(base, token, "GET", "/api/v1/targets")
    assert targets[0]["current"] == ["r002"]


def test_target_lock_is_held_against_other_processes(tmp_path, pg_url):
    """While a job holds PostgreSQL's advisory lock, a second run (another
    dashboard host, say) is refused by the database itself."""
    from webapp.core.runner import start_run_process
    from webapp.core.targets import Target

    revs = linear(2)
    revs[1].upgrade = "import time; time.sleep(5)"
    ini = make_env(tmp_path / "env", revs)
    target = Target(name="shop", label="shop", tier="staging", alembic_ini=ini, url_env="X")
    runs = []
    for i in range(2):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        proc = start_run_process(target, "upgrade", "head", url=pg_url, lock_name="shop",
                                 folder=folder)
        runs.append((proc, folder))
        time.sleep(1.5)
    results = []
    for proc, folder in runs:
        proc.communicate(timeout=60)
        results.append(json.loads((folder / "result.json").read_text()))
    assert results[0]["ok"] is True
    assert results[1]["ok"] is False and results[1]["busy"] is True
    assert version_table(pg_url) == {"r001"}


def test_job_survives_gunicorn_stopping(gunicorn_server, tmp_path, mysql_url):
    """The job runs in its own process and session: stopping every gunicorn
    worker (and the master) mid-migration does not stop it."""
    revs = linear(3)
    revs[1].upgrade = "import time; time.sleep(0 if op.get_context().as_sql else 4)"
    base, token = serve(gunicorn_server, tmp_path, mysql_url, revs, workers=2)
    status, body = api(base, token, "POST", "/api/v1/targets/shop/jobs",
                       {"command": "upgrade", "revision": "head"})
    assert status == 202
    # stop this test's gunicorn (master and workers, found by their instance folder)
    instance = gunicorn_server.env["DASHBOARD_INSTANCE_PATH"]
    pids = subprocess.run(["pgrep", "-f", "gunicorn -c gunicorn.conf.py"], capture_output=True,
                          text=True).stdout.split()
    stopped = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"DASHBOARD_INSTANCE_PATH={instance}".encode() in f.read():
                    os.kill(int(pid), signal.SIGTERM)
                    stopped += 1
        except OSError:
            continue
    assert stopped >= 2  # the master and its workers
    db_path = os.path.join(instance, "dashboard.db")
    time.sleep(1.5)
    try:
        urllib.request.urlopen(base + "/healthz", timeout=2)
        raise AssertionError("gunicorn still answers")
    except (urllib.error.URLError, ConnectionError):
        pass
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path) as conn:
            state = conn.execute("SELECT status FROM jobs WHERE id = ?",
                                 (body["job"],)).fetchone()[0]
        if state not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert state == "succeeded"
    assert version_table(mysql_url) == {"r002"}
