"""How a job runs is chosen once, in create_app (webapp.services.launchers):
a local process, Celery by task name, or a thread of this process."""

from __future__ import annotations

import os

import pytest
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.config import ConfigurationError
from webapp.services import launchers

# the subject is the job's own process (see make_app in conftest.py)
pytestmark = pytest.mark.job_process


def _targets(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("LAUNCH_URL", url)
    ini = make_env(tmp_path / "env", linear(3))
    return url, write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "LAUNCH_URL"}})


def test_in_process_launcher_runs_a_real_upgrade(make_app, tmp_path, monkeypatch):
    """The job's process body runs in a thread of this process: the real
    agent migrates the SQLite database, the job ends succeeded with its log,
    and this process is recorded as its worker."""
    from webapp.extensions import db
    from webapp.models import Job

    url, targets = _targets(tmp_path, monkeypatch)
    app = make_app(targets, JOB_LAUNCHER="inprocess")
    launcher = app.extensions[launchers.EXTENSION]
    assert isinstance(launcher, launchers.InProcessLauncher)
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "heads"})
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers, timeout=60)
    launcher.join(10)
    assert job["status"] == "succeeded", job["log"]
    assert job["applied"] == ["r000", "r001", "r002"] and job["to"] == ["r002"]
    assert "Running upgrade r001 -> r002" in job["log"]
    assert version_table(url) == {"r002"}
    with app.app_context():
        assert db.session.get(Job, posted.json["job"]).worker_pid == os.getpid()


def test_launcher_follows_the_configuration(make_app, tmp_path, monkeypatch):
    _, targets = _targets(tmp_path, monkeypatch)
    broker = "redis://127.0.0.1:6379/15"
    cases = [({}, launchers.LocalProcessLauncher),
             ({"BROKER_URL": broker}, launchers.CeleryLauncher),
             ({"BROKER_URL": broker, "JOB_LAUNCHER": "local"}, launchers.LocalProcessLauncher),
             ({"JOB_LAUNCHER": "inprocess"}, launchers.InProcessLauncher),
             ({"JOB_LAUNCHER": "celery", "BROKER_URL": broker}, launchers.CeleryLauncher)]
    for config, kind in cases:
        app = make_app(targets, **config)
        chosen = app.extensions[launchers.EXTENSION]
        assert type(chosen) is kind, config
        if kind is launchers.CeleryLauncher:
            assert chosen.broker_url == broker
        with app.app_context():
            assert launchers.current() is chosen
    with pytest.raises(ConfigurationError, match="JOB_LAUNCHER"):
        launchers.choose({"JOB_LAUNCHER": "thread"})
    with pytest.raises(ConfigurationError, match="BROKER_URL"):
        launchers.choose({"JOB_LAUNCHER": "celery", "BROKER_URL": None})
