"""Local jobs start warm (issue 18, item 5): the local launcher keeps a job
process waiting ahead of its job (``webapp/worker.py --standby``), with the
target's agent already started, so a job's migration runs in a process that
existed before the job did. The standby agent gets only the target's
environment, and a standby goes away with its launcher."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.agent import AGENT_DIR
from webapp.config import ConfigurationError, job_standbys
from webapp.services import launchers

# the subject is the job's own process (see make_app in conftest.py)
pytestmark = pytest.mark.job_process

# env.py appends the pid of the process running it online (a job's agent) to
# this file (plans run it offline, in agents of their own)
PID_LOG = ('if not context.is_offline_mode():\n'
           '    open(os.environ["PID_LOG"], "a").write(f"{os.getpid()}\\n")')


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _standby_agent(standby_pid: int, timeout: float = 30) -> int:
    """The pid of the standby agent the standby job process started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in _children(standby_pid):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # the agent once exec'd (a fork not yet exec'd still shows worker.py)
            if cmdline[1:3] == [str(AGENT_DIR).encode(), b"--standby"]:
                return child
        time.sleep(0.05)
    raise AssertionError(f"standby {standby_pid} started no agent within {timeout} s")


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def shop(make_app, tmp_path, monkeypatch):
    """An app (local launcher, one standby) with target ``shop`` on SQLite."""
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("STANDBY_URL", url)
    pid_log = tmp_path / "agent-pids"
    ini = make_env(tmp_path / "env", linear(3), env_extra=PID_LOG)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "STANDBY_URL",
        "env": {"PID_LOG": str(pid_log)}}})
    app = make_app(targets, JOB_STANDBYS=1)
    launcher = app.extensions[launchers.EXTENSION]
    assert isinstance(launcher, launchers.LocalProcessLauncher)
    yield app, launcher, url, pid_log
    launcher.close()


def _wait_for_standby(launcher, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not launcher._waiting:
        assert time.monotonic() < deadline, f"no standby within {timeout} s"
        time.sleep(0.05)
    return _waiting_pid(launcher)


def _waiting_pid(launcher) -> int:
    (proc, _), = launcher._waiting.values()
    return proc.pid


def test_a_job_shown_as_a_plan_runs_in_the_process_started_for_it(shop):
    """Showing the plan starts a standby (and its agent); confirming hands
    the job to it: the job's worker is that process, and the migration runs
    in the agent that was started before the job existed."""
    from support.common import add_user, csrf_from, login

    from webapp.extensions import db
    from webapp.models import Job

    app, launcher, url, pid_log = shop
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    page = client.get("/targets/shop/plan?command=upgrade&revision=heads")
    assert page.status_code == 200
    standby = _waiting_pid(launcher)
    agent = _standby_agent(standby)
    html = page.get_data(as_text=True)
    plan_hash = html.split('name="plan_hash" value="', 1)[1].split('"', 1)[0]
    posted = client.post("/targets/shop/jobs", data={
        "csrf_token": csrf_from(html), "command": "upgrade", "revision": "heads",
        "plan_hash": plan_hash})
    assert posted.status_code == 303, posted.get_data(as_text=True)[:500]
    job_id = int(posted.headers["Location"].rstrip("/").rsplit("/", 1)[1])
    headers = token_headers(app, "reader", "viewer")
    job = wait_job(client, job_id, headers, timeout=60)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(url) == {"r002"}
    with app.app_context():
        assert db.session.get(Job, job_id).worker_pid == standby
    assert pid_log.read_text().split() == [str(agent)]
    # once this job's process has ended, the next job like it gets a standby
    assert _wait_for_standby(launcher) != standby


def test_the_standby_agent_has_only_the_targets_environment(shop):
    """The warm agent is the target's process like a cold one: the
    dashboard's secrets and database URL are not in its environment."""
    app, launcher, _url, _log = shop
    with app.app_context():
        from webapp.services.catalog import get_catalog

        catalog = get_catalog()
        target = catalog.get("shop")
        launcher.prepare(target, catalog.database_url(target))
    agent = _standby_agent(_waiting_pid(launcher))
    environ = dict(item.split(b"=", 1) for item in
                   Path(f"/proc/{agent}/environ").read_bytes().split(b"\0") if b"=" in item)
    names = {k.decode() for k in environ}
    assert "PID_LOG" in names  # the target's [env]
    # no database URL until its job hands one over, and none of the dashboard's
    assert "STANDBY_URL" not in names and _url.encode() not in b"".join(environ.values())
    assert not {n for n in names if n.startswith("DASHBOARD_")}, names
    assert app.config["SECRET_KEY"].encode() not in b"".join(environ.values())


def test_targets_of_one_project_share_a_standby(make_app, tmp_path, monkeypatch):
    """Two targets of the same project (same interpreter, directory and
    [env]), each with its own database: the job on the second runs in the
    agent started ahead for the first, with the second's URL."""
    from webapp.extensions import db
    from webapp.models import Job

    urls = {n: sqlite_url(tmp_path / f"{n}.db") for n in ("eu", "us")}
    for name, url in urls.items():
        monkeypatch.setenv(f"SHOP_{name.upper()}_URL", url)
    pid_log = tmp_path / "agent-pids"
    ini = make_env(tmp_path / "env", linear(2), env_extra=PID_LOG)
    targets = write_targets_file(tmp_path / "targets.toml", {name: {
        "tier": "staging", "alembic_ini": str(ini), "url_env": f"SHOP_{name.upper()}_URL",
        "env": {"PID_LOG": str(pid_log)}} for name in urls})
    app = make_app(targets, JOB_STANDBYS=1)
    launcher = app.extensions[launchers.EXTENSION]
    try:
        with app.app_context():
            from webapp.services.catalog import get_catalog

            catalog = get_catalog()
            launcher.prepare(catalog.get("eu"), catalog.database_url(catalog.get("eu")))
        standby = _waiting_pid(launcher)
        agent = _standby_agent(standby)
        headers = token_headers(app, "pipeline", "operator")
        client = app.test_client()
        posted = client.post("/api/v1/targets/us/jobs", headers=headers,
                             json={"command": "upgrade", "revision": "heads"})
        assert posted.status_code == 202, posted.json
        job = wait_job(client, posted.json["job"], headers)
        assert job["status"] == "succeeded", job["log"]
        assert version_table(urls["us"]) == {"r001"} and version_table(urls["eu"]) == set()
        with app.app_context():
            assert db.session.get(Job, posted.json["job"]).worker_pid == standby
        assert pid_log.read_text().split() == [str(agent)]
    finally:
        launcher.close()


def test_an_api_job_leaves_a_standby_for_the_next_one(shop):
    """Jobs posted one after another (a pipeline, a bench): the first starts
    cold and leaves a standby, the second runs in it."""
    from webapp.extensions import db
    from webapp.models import Job

    app, launcher, url, pid_log = shop
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    first = client.post("/api/v1/targets/shop/jobs", headers=headers,
                        json={"command": "upgrade", "revision": "r001"})
    assert first.status_code == 202, first.json
    assert wait_job(client, first.json["job"], headers)["status"] == "succeeded"
    standby = _wait_for_standby(launcher)  # started once the first job's process ended
    agent = _standby_agent(standby)
    second = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "heads"})
    assert second.status_code == 202, second.json
    job = wait_job(client, second.json["job"], headers)
    assert job["status"] == "succeeded", job["log"]
    assert job["applied"] == ["r002"] and version_table(url) == {"r002"}
    with app.app_context():
        assert db.session.get(Job, second.json["job"]).worker_pid == standby
    assert pid_log.read_text().split()[1] == str(agent)


def test_a_dismissed_standby_and_its_agent_exit(shop):
    app, launcher, _url, _log = shop
    with app.app_context():
        from webapp.services.catalog import get_catalog

        catalog = get_catalog()
        launcher.prepare(catalog.get("shop"), catalog.database_url(catalog.get("shop")))
    standby = _waiting_pid(launcher)
    agent = _standby_agent(standby)
    launcher.close()
    assert _gone(standby) and _gone(agent)


def test_no_standby_when_turned_off(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("STANDBY_URL", url)
    ini = make_env(tmp_path / "env", linear(2))
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "STANDBY_URL"}})
    app = make_app(targets, JOB_STANDBYS=0)
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "heads"})
    assert wait_job(client, posted.json["job"], headers)["status"] == "succeeded"
    assert app.extensions[launchers.EXTENSION]._waiting == {}
    names = {thread.name for thread in threading.enumerate()}
    assert f"standby-after-job-{posted.json['job']}" not in names


def test_job_standbys_setting():
    assert job_standbys({}) == 2
    assert job_standbys({"DASHBOARD_JOB_STANDBYS": "0"}) == 0
    for bad in ("-1", "two", "9"):
        with pytest.raises(ConfigurationError, match="DASHBOARD_JOB_STANDBYS"):
            job_standbys({"DASHBOARD_JOB_STANDBYS": bad})
