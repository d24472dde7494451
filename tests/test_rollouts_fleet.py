"""Rollouts over MariaDB and PostgreSQL targets, and through a real Celery
worker on the real Redis (advancing as a Celery task)."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from support.envtools import make_env, write_targets_file
from support.jobtools import token_headers, version_table
from support.rollouttools import fleet, jobs_per_target, two_revisions, wait_rollout
from test_queue import Workers, broker_url  # noqa: F401  (the fixture)


@pytest.mark.mysql
@pytest.mark.postgresql
def test_rollout_over_mariadb_then_postgresql(make_app, tmp_path, monkeypatch, mysql_url,
                                              pg_url):
    ini = make_env(tmp_path / "env", two_revisions())
    monkeypatch.setenv("MARIA_URL", mysql_url)
    monkeypatch.setenv("PG_URL", pg_url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {
        "maria": {"tier": "staging", "alembic_ini": str(ini), "url_env": "MARIA_URL",
                  "tags": ["shop"]},
        "pg": {"tier": "production", "alembic_ini": str(ini), "url_env": "PG_URL",
               "tags": ["shop"]}}))
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "tag": "shop", "concurrency": 2})
    assert posted.status_code == 202, posted.json
    # staging first: the PostgreSQL target waits for the MariaDB one
    assert [(s["target"], s["wave"]) for s in posted.json["steps"]] == [("maria", 1),
                                                                        ("pg", 2)]
    assert posted.json["steps"][1]["status"] == "pending"
    done = wait_rollout(client, posted.json["id"], headers)
    assert done["status"] == "succeeded", done
    assert version_table(mysql_url) == {"r001"} and version_table(pg_url) == {"r001"}
    # the same rollout again: nothing to do anywhere, every step skipped
    again = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "targets": ["maria", "pg"]})
    done = wait_rollout(client, again.json["id"], headers)
    assert done["status"] == "succeeded" and done["counts"]["skipped"] == 2
    assert jobs_per_target(app) == {"maria": 1, "pg": 1}


def test_rollout_through_a_celery_worker(make_app, tmp_path, monkeypatch, broker_url,  # noqa: F811
                                         instance_path):
    queue = f"fleet-{uuid.uuid4().hex[:8]}"
    names = ["t-a", "t-b", "t-c"]
    targets = fleet(tmp_path, monkeypatch, names, spec={"queue": queue})
    app, workers = _app_and_worker(make_app, targets, broker_url, queue, tmp_path,
                                   instance_path)
    try:
        client, headers, posted = _post_rollout(app, {"tag": "tenant", "batch_size": 1})
        rollout = posted["id"]
        # nobody polls: the worker's advance task starts wave 2 and 3 itself
        _wait_without_views(app, rollout, 90, "rollout did not end without views")
        from webapp.extensions import db
        from webapp.models import Job
        done = client.get(f"/api/v1/rollouts/{rollout}", headers=headers).json
        assert done["status"] == "succeeded", done
        assert jobs_per_target(app) == {name: 1 for name in names}
        with app.app_context():  # all three ran in the worker's one pool process
            pids = {j.worker_pid for j in db.session.execute(db.select(Job)).scalars()}
        assert len(pids) == 1
        assert "alembic_dashboard.advance_rollout" in (
            tmp_path / f"celery-{queue}.log").read_text()
        for name in names:
            assert version_table(f"sqlite:///{tmp_path / 'db' / (name + '.db')}") == {"r001"}
    finally:
        workers.stop_all()


def test_cancelling_a_queued_step_moves_the_rollout_on(
        make_app, tmp_path, monkeypatch, broker_url, instance_path):  # noqa: F811
    """t-a's job waits on a queue no worker serves; cancelling it (a POST)
    fails its step and, with no view polling, the rollout goes on to t-b on
    the worker's queue (it used to stand still until "Start next steps")."""
    queue, nowhere = f"fleet-{uuid.uuid4().hex[:8]}", f"nowhere-{uuid.uuid4().hex[:8]}"
    targets = fleet(tmp_path, monkeypatch, ["t-a", "t-b"], spec={"queue": queue},
                    overrides={"t-a": {"queue": nowhere}})
    app, workers = _app_and_worker(make_app, targets, broker_url, queue, tmp_path,
                                   instance_path)
    try:
        client, headers, posted = _post_rollout(app, {
            "targets": ["t-a", "t-b"], "batch_size": 1, "stop_on_failure": False})
        rollout = posted["id"]
        first = {s["target"]: s for s in posted["steps"]}["t-a"]
        assert first["wave"] == 1 and first["status"] == "running", posted
        cancelled = client.post(f"/api/v1/jobs/{first['job']}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json["status"] == "abandoned"
        _wait_without_views(app, rollout, 60, "the rollout stood still after the cancel")
        done = client.get(f"/api/v1/rollouts/{rollout}", headers=headers).json
        steps = {s["target"]: s for s in done["steps"]}
        assert done["status"] == "failed", done
        assert steps["t-a"]["status"] == "failed" and "Cancelled by olga" in steps["t-a"]["note"]
        assert steps["t-b"]["status"] == "succeeded", done
        assert version_table(f"sqlite:///{tmp_path / 'db' / 't-a.db'}") == set()
        assert version_table(f"sqlite:///{tmp_path / 'db' / 't-b.db'}") == {"r001"}
    finally:
        workers.stop_all()


def _post_rollout(app, body: dict):
    """``POST /api/v1/rollouts`` of ``upgrade head`` plus ``body`` as operator
    olga; asserts 202 and returns (client, headers, the rollout's JSON)."""
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", **body})
    assert posted.status_code == 202, posted.json
    return client, headers, posted.json


def _app_and_worker(make_app, targets, broker: str, queue: str, tmp_path, instance_path):
    """The app on the broker, advancing rollouts on ``queue``, and a real
    Celery worker started on that queue (stop it with ``stop_all()``)."""
    app = make_app(targets, BROKER_URL=broker, ROLLOUT_QUEUE=queue)
    env = {**os.environ, "DASHBOARD_BROKER_URL": broker, "DASHBOARD_ROLLOUT_QUEUE": queue,
           "DASHBOARD_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "DASHBOARD_TARGETS": str(targets), "DASHBOARD_SECRET_KEY": "test-secret",
           "DASHBOARD_INSTANCE_PATH": str(instance_path)}
    workers = Workers(env, tmp_path)
    workers.start(queue)
    return app, workers


def _wait_without_views(app, rollout_id: int, timeout: float, message: str) -> None:
    """Wait until the rollout is no longer running, reading its row directly
    (no view, so nothing but the jobs' ends and the POSTs moves it on)."""
    from webapp.extensions import db
    from webapp.models import Rollout

    deadline = time.monotonic() + timeout
    while True:
        with app.app_context():
            if db.session.get(Rollout, rollout_id).status != "running":
                return
        assert time.monotonic() < deadline, message
        time.sleep(0.5)
