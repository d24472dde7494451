"""Fleet rollouts with real job processes on real SQLite tenant databases:
waves, the concurrency limit, stop on first failure, pause/resume."""

from __future__ import annotations

import os
import re
import threading

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from support.common import add_user
from support.jobtools import token_headers, version_table
from support.rollouttools import fleet, job_intervals, jobs_per_target, most_at_once, wait_rollout

TENANTS = [f"tenant-{i:02d}" for i in range(30)]


def test_thirty_tenants_in_waves_never_more_than_n_at_once(make_app, tmp_path, monkeypatch):
    # r001 takes 0.5 s: the first four jobs still run when the POST answers
    app = make_app(fleet(tmp_path, monkeypatch, TENANTS, sleep=0.5))
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "tag": "tenant", "batch_size": 10,
        "concurrency": 4, "reason": "add t_r001 everywhere"})
    assert posted.status_code == 202, posted.json
    assert posted.json["waves"] == 3 and len(posted.json["steps"]) == 30
    first = [s for s in posted.json["steps"] if s["status"] == "running"]
    assert len(first) == 4 and {s["wave"] for s in first} == {1}
    done = wait_rollout(client, posted.json["id"], headers)
    assert done["status"] == "succeeded", done
    assert done["counts"]["succeeded"] == 30
    for name in TENANTS:
        assert version_table(f"sqlite:///{tmp_path / 'db' / (name + '.db')}") == {"r001"}
    assert set(jobs_per_target(app).values()) == {1}  # one job per tenant, never two
    steps = done["steps"]
    intervals = job_intervals(app, [s["job"] for s in steps])
    assert 2 <= most_at_once(intervals) <= 4, intervals
    # wave k+1 starts only after every job of wave k has finished
    by_wave = {w: job_intervals(app, [s["job"] for s in steps if s["wave"] == w])
               for w in (1, 2, 3)}
    for wave in (1, 2):
        assert max(f for _, f in by_wave[wave]) <= min(s for s, _ in by_wave[wave + 1])


@pytest.mark.job_process
def test_jobs_started_by_finishing_jobs_keep_one_niceness(make_app, tmp_path, monkeypatch):
    """Three waves of one tenant: each wave's job process is started by the
    previous one's end, generation after generation; every migration runs
    at most 5 nicer than this process (no +5 per generation)."""
    names = TENANTS[:3]
    app = make_app(fleet(tmp_path, monkeypatch, names))
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "targets": names, "batch_size": 1})
    assert posted.status_code == 202, posted.json
    done = wait_rollout(client, posted.json["id"], headers)
    assert done["status"] == "succeeded", done
    niceness = [int(n) for s in done["steps"] for n in re.findall(
        r"niceness (\d+)", client.get(f"/api/v1/jobs/{s['job']}", headers=headers).json["log"])]
    assert len(niceness) == 3 and max(niceness) <= os.nice(0) + 5, niceness


def test_tag_selection_and_stop_on_first_failure(make_app, tmp_path, monkeypatch):
    names = TENANTS[:7]
    app = make_app(fleet(tmp_path, monkeypatch, names))
    # tenant-02 already has the table r000 creates: its upgrade fails
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db' / 'tenant-02.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t_r000 (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "heads", "tag": ["eu"], "batch_size": 1,
        "concurrency": 1})
    assert posted.status_code == 202, posted.json
    # "eu" is on the even tenants only: 00, 02, 04, 06, one per wave
    assert [s["target"] for s in posted.json["steps"]] == [
        "tenant-00", "tenant-02", "tenant-04", "tenant-06"]
    done = wait_rollout(client, posted.json["id"], headers)
    assert done["status"] == "failed"
    states = {s["target"]: s for s in done["steps"]}
    assert states["tenant-00"]["status"] == "succeeded"
    assert states["tenant-02"]["status"] == "failed"
    assert "failed" in states["tenant-02"]["note"] and states["tenant-02"]["job"]
    for later in ("tenant-04", "tenant-06"):  # later waves never start, and say why
        assert states[later]["status"] == "not_run" and states[later]["job"] is None
        assert "tenant-02 failed" in states[later]["note"]
    assert set(jobs_per_target(app)) == {"tenant-00", "tenant-02"}
    assert version_table(f"sqlite:///{tmp_path / 'db' / 'tenant-04.db'}") == set()


def test_pause_then_resume(make_app, tmp_path, monkeypatch):
    names = TENANTS[:4]
    app = make_app(fleet(tmp_path, monkeypatch, names, sleep=1))
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "targets": names, "batch_size": 2,
        "concurrency": 2})
    rollout = posted.json["id"]
    paused = client.post(f"/api/v1/rollouts/{rollout}/pause", headers=headers)
    assert paused.status_code == 200 and paused.json["status"] == "paused"
    # the jobs already running finish; the next wave does not start
    data = wait_rollout(client, rollout, headers, until=lambda r: all(
        s["status"] == "succeeded" for s in r["steps"] if s["wave"] == 1))
    assert data["status"] == "paused"
    assert [s["status"] for s in data["steps"] if s["wave"] == 2] == ["pending", "pending"]
    assert set(jobs_per_target(app)) == set(names[:2])
    assert client.post(f"/api/v1/rollouts/{rollout}/pause", headers=headers).status_code == 409
    # meanwhile someone upgrades tenant-03 by hand: its plan is made when its
    # step starts, from its state then, so there is nothing left to do
    config = Config(str(tmp_path / "env" / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'db' / 'tenant-03.db'}")
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    resumed = client.post(f"/api/v1/rollouts/{rollout}/resume", headers=headers)
    assert resumed.status_code == 200 and resumed.json["status"] == "running"
    done = wait_rollout(client, rollout, headers)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 3
    skipped = done["steps"][3]
    assert (skipped["target"], skipped["status"], skipped["job"]) == ("tenant-03", "skipped",
                                                                      None)
    assert skipped["note"].startswith("nothing_to_do")
    with app.app_context():
        from webapp.services import audit

        actions = [e.action for e in audit.query(action="rollout")]
    assert {"rollout.create", "rollout.pause", "rollout.resume", "rollout.end",
            "rollout.step.start", "rollout.step.end"} <= set(actions)


def test_protected_target_waits_for_approval(make_app, tmp_path, monkeypatch):
    app = make_app(fleet(tmp_path, monkeypatch, ["stage", "prod"], overrides={
        "stage": {"tier": "staging"}, "prod": {"policy": {"approvals_required": 1}}}))
    client = app.test_client()
    op = token_headers(app, "olga", "operator")
    approver = token_headers(app, "anna", "approver")
    posted = client.post("/api/v1/rollouts", headers=op, json={
        "command": "upgrade", "revision": "head", "tag": "tenant", "reason": "release 7"})
    assert posted.status_code == 202, posted.json
    assert [(s["target"], s["wave"]) for s in posted.json["steps"]] == [("stage", 1),
                                                                        ("prod", 2)]
    data = wait_rollout(client, posted.json["id"], op,
                        until=lambda r: r["steps"][1]["status"] not in ("pending", "starting"))
    prod = data["steps"][1]
    assert prod["status"] == "awaiting_approval" and prod["job"] is None
    assert data["status"] == "running" and data["steps"][0]["status"] == "succeeded"
    request_id = prod["request"]
    listed = {r["id"]: r for r in client.get("/api/v1/requests", headers=op).json}
    assert listed[request_id]["requester"] == "olga"
    assert "release 7" in listed[request_id]["reason"]
    # the requester cannot approve it, another approver can; the rollout goes on
    own = client.post(f"/api/v1/requests/{request_id}/approve", headers=op, json={})
    assert own.status_code == 403
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=approver,
                           json={"comment": "ok"})
    assert approved.status_code == 200 and approved.json.get("job"), approved.json
    done = wait_rollout(client, posted.json["id"], op)
    assert done["status"] == "succeeded", done
    assert done["steps"][1]["status"] == "succeeded"
    assert done["steps"][1]["job"] == approved.json["job"]
    assert version_table(f"sqlite:///{tmp_path / 'db' / 'prod.db'}") == {"r001"}


def test_api_shapes_roles_policy_and_cancel(make_app, tmp_path, monkeypatch):
    names = TENANTS[:3]
    targets = fleet(tmp_path, monkeypatch, names, spec={"policy": {"allow_downgrade": False}})
    app = make_app(targets)
    client = app.test_client()
    op = token_headers(app, "olga", "operator")
    viewer = token_headers(app, "vic", "viewer")
    body = {"command": "upgrade", "revision": "head", "tag": "tenant", "paused": True}
    refused = [
        (viewer, body, 403, "role"),
        (op, {**body, "command": "stamp"}, 403, "role"),
        (op, {**body, "command": "downgrade", "revision": "-1"}, 403, "policy"),
        (op, {"command": "upgrade", "revision": "head"}, 400, "bad_input"),
        (op, {**body, "tier": "prod"}, 400, "bad_input"),
        (op, {**body, "targets": ["nope"]}, 404, "not_found"),
        (op, {**body, "revision": "abc123"}, 404, "unknown_revision"),
        (op, {**body, "concurrency": 0}, 400, "bad_input"),
        (op, {**body, "batch_size": "x"}, 400, "bad_input"),
        (op, {**body, "tag": "nobody"}, 400, "bad_input"),
        (op, [1, 2], 400, "bad_input"),
    ]
    for headers, payload, code, error in refused:
        answer = client.post("/api/v1/rollouts", headers=headers, json=payload)
        assert (answer.status_code, answer.json["error"]) == (code, error), (payload,
                                                                            answer.json)
    assert client.get("/api/v1/rollouts", headers=op).json == []  # nothing was stored
    posted = client.post("/api/v1/rollouts", headers=op, json=body)
    assert posted.status_code == 202
    data = posted.json
    assert set(data) >= {"id", "command", "revision", "status", "concurrency", "batch_size",
                         "stop_on_failure", "selection", "counts", "waves", "current_wave",
                         "steps", "user", "created_at", "finished_at"}
    assert data["status"] == "paused" and data["selection"]["tag"] == ["tenant"]
    assert set(data["steps"][0]) == {"target", "wave", "status", "job", "job_status",
                                     "request", "request_status", "note", "started_at",
                                     "finished_at"}
    rollout = data["id"]
    assert client.get(f"/api/v1/rollouts/{rollout}", headers=viewer).status_code == 200
    assert client.post(f"/api/v1/rollouts/{rollout}/resume",
                       headers=viewer).status_code == 403
    assert client.get("/api/v1/rollouts/999", headers=op).status_code == 404
    cancelled = client.post(f"/api/v1/rollouts/{rollout}/cancel", headers=op)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    assert {s["status"] for s in cancelled.json["steps"]} == {"not_run"}
    again = client.post(f"/api/v1/rollouts/{rollout}/resume", headers=op)
    assert again.status_code == 409 and again.json["error"] == "not_open"
    assert jobs_per_target(app) == {}
    # the page and its fragment: the fragment stops htmx polling (286) once ended
    from support.common import csrf_from, login

    add_user(app, "pat", "operator")
    browser = app.test_client()
    login(browser, "pat")
    page = browser.get(f"/rollouts/{rollout}")
    assert page.status_code == 200 and b'data-step-status="not_run"' in page.data
    fragment = browser.get(f"/rollouts/{rollout}/status", headers={"HX-Request": "true"})
    assert fragment.status_code == 286
    no_csrf = browser.post("/api/v1/rollouts", json=body)
    assert no_csrf.status_code == 400  # a session POST needs the CSRF header
    # the start form (CSRF token from the page): a paused rollout of two named targets
    form = browser.get("/rollouts").get_data(as_text=True)
    fields = {"csrf_token": csrf_from(form), "command": "upgrade", "revision": "heads",
              "targets": names[:2], "batch_size": "1", "concurrency": "1", "paused": "on",
              "stop_on_failure": "on", "reason": "from the form"}
    started = browser.post("/rollouts", data=fields)
    assert started.status_code == 303
    shown = browser.get(started.headers["Location"]).get_data(as_text=True)
    assert shown.count('data-step-status="pending"') == 2 and "Wave 2" in shown
    bad = browser.post("/rollouts", data={**fields, "concurrency": "0"})
    assert bad.status_code == 400 and "concurrency must be between" in bad.get_data(True)
    with app.app_context():
        from webapp.services import audit

        denied = [e for e in audit.query(action="rollout.create") if e.outcome == "denied"]
    assert len(denied) == len(refused) + 1  # and the form's refusal


@pytest.mark.postgresql
def test_concurrent_advancers_never_start_a_step_twice(make_app, tmp_path, monkeypatch,
                                                       pg_url):
    """Eight advancers at once on a dashboard database with row locks
    (PostgreSQL, as several dashboard hosts share it), then the job processes'."""
    names = TENANTS[:6]
    app = make_app(fleet(tmp_path, monkeypatch, names, sleep=1),
                   SQLALCHEMY_DATABASE_URI=pg_url)
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "tag": "tenant", "concurrency": 3,
        "paused": True})
    rollout = posted.json["id"]
    from webapp.extensions import db
    from webapp.models import AuditEvent, Rollout
    from webapp.services import rollout_advance
    from webapp.services.catalog import get_catalog

    with app.app_context():  # running, but nobody has advanced it yet
        db.session.execute(sa.update(Rollout).where(Rollout.id == rollout).values(
            status="running"))
        db.session.commit()
    barrier = threading.Barrier(8)
    errors = []

    def advancer():
        try:
            with app.app_context():
                barrier.wait()
                rollout_advance.advance(get_catalog(), rollout)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=advancer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.app_context():
        started = db.session.execute(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "rollout.step.start")).scalar()
    assert started == 3 and sum(jobs_per_target(app).values()) == 3
    done = wait_rollout(client, rollout, headers)
    assert done["status"] == "succeeded"
    assert jobs_per_target(app) == {name: 1 for name in names}
    assert most_at_once(job_intervals(app, [s["job"] for s in done["steps"]])) <= 3


@pytest.mark.job_process
def test_a_view_never_starts_a_step(make_app, tmp_path, monkeypatch):
    """The job of wave 1 is killed: the reaper (run by the views) finds it
    abandoned and its step failed, but no GET — page, fragment or API —
    starts wave 2 (a GET never starts a migration); "Start next steps"
    (a POST) does."""
    import signal
    import time

    from support.common import login

    app = make_app(fleet(tmp_path, monkeypatch, ["a", "b"], sleep=30))
    add_user(app, "olga", "operator")
    headers = token_headers(app, "pipe", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "targets": ["a", "b"], "batch_size": 1,
        "stop_on_failure": False})
    assert posted.status_code == 202, posted.json
    rollout = posted.json["id"]
    time.sleep(1)
    os.kill(_worker_pid(app, posted.json["steps"][0]["job"]), signal.SIGKILL)
    data = wait_rollout(client, rollout, headers,
                        until=lambda r: r["steps"][0]["status"] == "failed")
    ui = app.test_client()
    login(ui, "olga")
    for _ in range(3):  # the page, its polled fragment and the API, again and again
        page = ui.get(f"/rollouts/{rollout}").get_data(as_text=True)
        ui.get(f"/rollouts/{rollout}/status", headers={"HX-Request": "true"})
        data = client.get(f"/api/v1/rollouts/{rollout}", headers=headers).json
    assert data["status"] == "running" and data["steps"][1]["status"] == "pending", data
    assert set(jobs_per_target(app)) == {"a"}
    assert version_table(f"sqlite:///{tmp_path / 'db' / 'b.db'}") == set()
    assert "Start next steps" in page and "never starts a migration" in page
    proceeded = client.post(f"/api/v1/rollouts/{rollout}/proceed", headers=headers)
    assert proceeded.status_code == 200, proceeded.json
    assert proceeded.json["steps"][1]["status"] in ("running", "succeeded")
    os.kill(_worker_pid(app, proceeded.json["steps"][1]["job"]), signal.SIGKILL)  # not 30 s
    done = wait_rollout(client, rollout, headers)
    assert done["status"] == "failed" and set(jobs_per_target(app)) == {"a", "b"}


def _worker_pid(app, job_id: int) -> int:
    with app.app_context():
        from webapp.extensions import db
        from webapp.models import Job

        return db.session.get(Job, job_id).worker_pid


def test_a_job_end_during_a_view_still_starts_the_next_wave(make_app, tmp_path, monkeypatch):
    """The CI failure of stop 15: a page view (which may not start steps) was
    advancing the rollout when the last job of wave 2 ended; the job's
    advancer found the lease taken and left it to the holder — the view —
    which could not start wave 3, so the rollout stood still. Here the view
    is held inside its pass while a job's end advances the rollout: the next
    wave must start."""
    from webapp.extensions import db
    from webapp.models import Rollout, RolloutStep
    from webapp.services import rollout_advance
    from webapp.services.catalog import get_catalog

    app = make_app(fleet(tmp_path, monkeypatch, ["a", "b"]))
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "targets": ["a", "b"], "batch_size": 1,
        "paused": True})
    assert posted.status_code == 202, posted.json
    rollout = posted.json["id"]
    with app.app_context():  # wave 1 ended; wave 2 waits for whoever advances next
        db.session.execute(sa.update(Rollout).where(Rollout.id == rollout).values(
            status="running"))
        db.session.execute(sa.update(RolloutStep).where(
            RolloutStep.rollout_id == rollout, RolloutStep.target == "a").values(
            status="succeeded"))
        db.session.commit()

    view_inside, job_end_done = threading.Event(), threading.Event()
    original = rollout_advance._record_ended

    def record_ended(r):
        if threading.current_thread().name == "view":
            view_inside.set()
            job_end_done.wait(20)
        return original(r)

    monkeypatch.setattr(rollout_advance, "_record_ended", record_ended)
    errors = []

    def view():
        try:
            with app.app_context():
                rollout_advance.record_ended(get_catalog(), rollout)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=view, name="view")
    thread.start()
    assert view_inside.wait(20)
    try:
        with app.app_context():  # what the job process does when its job ends
            rollout_advance.advance(get_catalog(), rollout)
    finally:
        job_end_done.set()
        thread.join(30)
    assert errors == []
    monkeypatch.setattr(rollout_advance, "_record_ended", original)
    data = client.get(f"/api/v1/rollouts/{rollout}", headers=headers).json
    assert data["steps"][1]["status"] in ("running", "succeeded"), data
    done = wait_rollout(client, rollout, headers)
    assert done["status"] == "succeeded", done
    assert version_table(f"sqlite:///{tmp_path / 'db' / 'b.db'}") == {"r001"}


def test_a_large_fleet_with_nothing_to_do_ends_in_one_request(make_app, tmp_path, monkeypatch):
    """Sixty tenants already at head, one at a time: every step is skipped at
    once (no job, so no job's end to wake the rollout), and the POST that
    starts the rollout carries it to its end. One advance used to stop after
    50 passes of one step each and leave the rest pending."""
    names = [f"tenant-{i:02d}" for i in range(60)]
    app = make_app(fleet(tmp_path, monkeypatch, names))
    config = Config(str(tmp_path / "env" / "alembic.ini"))
    config.attributes["configure_logger"] = False
    for name in names:
        config.set_main_option("sqlalchemy.url", f"sqlite:///{tmp_path / 'db' / (name + '.db')}")
        command.upgrade(config, "head")
    client = app.test_client()
    headers = token_headers(app, "olga", "operator")
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "head", "tag": "tenant", "concurrency": 1})
    assert posted.status_code == 202, posted.json
    assert posted.json["status"] == "succeeded", posted.json["counts"]
    assert posted.json["counts"]["skipped"] == 60 and jobs_per_target(app) == {}
