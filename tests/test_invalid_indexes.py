"""Issue 19 item 1, last part, on the real PostgreSQL: a ``CREATE INDEX
CONCURRENTLY`` that timed out behind a writer leaves an INVALID index; the
next plan lists it (read from the live ``pg_index``, named after the job
that left it) and warns; the plan that drops it first (an opt-in on the
plan page and in the API) has the drop in its SQL and its hash, and its job
drops it under the lock guard, audited, before the upgrade, which then
succeeds."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.locktools import fill_big_table

from webapp.core.invalid_indexes import HEADER, with_invalid_indexes
from webapp.core.plan import Plan, PlanStep
from webapp.extensions import db
from webapp.models import ApprovalRequest, AuditEvent

pytestmark = [pytest.mark.postgresql, pytest.mark.timeout(60)]

CIC = Rev("r001", "r000", "index big.payload concurrently",
          upgrade=("with op.get_context().autocommit_block():\n" + " " * 16 +
                   'op.create_index("ix_big_payload", "big", ["payload"], '
                   "postgresql_concurrently=True)"),
          downgrade='op.drop_index("ix_big_payload", "big")')
PLAN_API = "/api/v1/targets/shop/plan?command=upgrade&revision=heads"
DROP = 'DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_big_payload"'


def _index_valid(url: str) -> bool | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = 'ix_big_payload'")).scalar()
    finally:
        engine.dispose()


def test_next_plan_offers_to_drop_the_invalid_index(make_app, tmp_path, monkeypatch, pg_url):
    ini = make_env(tmp_path / "env", [Rev("r000", None, "base", upgrade="pass",
                                          downgrade="pass"), CIC])
    fill_big_table(pg_url, rows=2000)
    monkeypatch.setenv("LOCKS_TEST_URL", pg_url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "LOCKS_TEST_URL",
        "policy": {"lock_timeout": 1, "lock_retries": 0}}}))
    headers = token_headers(app, "ops", "operator")
    client = app.test_client()

    # a writer's open transaction: the CIC gives up after lock_timeout, INVALID index left
    engine = sa.create_engine(pg_url)
    writer = engine.connect()
    writer.execute(sa.text("UPDATE big SET payload = 'x' WHERE id = 7"))
    try:
        started = client.post("/api/v1/targets/shop/jobs", headers=headers,
                              json={"command": "upgrade", "revision": "heads"})
        failed = wait_job(client, started.json["job"], headers, timeout=20)
    finally:
        writer.close()
        engine.dispose()
    assert failed["status"] == "failed" and "INVALID index left behind" in failed["error"]
    assert _index_valid(pg_url) is False

    # the next plan lists it, from the live database, and warns; nothing is dropped
    plain = client.get(PLAN_API, headers=headers).json
    assert plain["invalid_indexes"] == [{"schema": "public", "name": "ix_big_payload",
                                         "table": "big", "left_by_job": failed["id"]}]
    assert any("INVALID index(es) left by a failed CREATE INDEX CONCURRENTLY still exist: "
               f"public.ix_big_payload on big (left by job {failed['id']})" in w
               for w in plain["warnings"])
    assert "DROP INDEX" not in plain["sql"]
    # with the option: the drop heads the SQL (so the hash), and the forecast reads it
    dropping = client.get(PLAN_API + "&drop_invalid_indexes=true", headers=headers).json
    assert dropping["sql"].startswith(HEADER + DROP + ";\n")
    assert dropping["plan_hash"] != plain["plan_hash"]
    assert dropping["steps"] == plain["steps"]
    assert any(line["statement"] == DROP for line in dropping["forecast"])

    # the plan page: the list, the opt-in, and the confirmation carrying it
    add_user(app, "olga", "operator")
    login(client, "olga")
    failed_page = client.get(f"/jobs/{failed['id']}").get_data(as_text=True)
    assert 'id="plan-drop-invalid"' in failed_page and "drop_invalid_indexes=on" in failed_page
    page = client.get("/targets/shop/plan?command=upgrade&revision=heads").get_data(
        as_text=True)
    assert 'id="invalid-indexes"' in page and 'name="drop_invalid_indexes"' in page
    assert f'href="/jobs/{failed["id"]}"' in page and 'id="drops-included"' not in page
    page = client.get("/targets/shop/plan?command=upgrade&revision=heads&"
                      "drop_invalid_indexes=on").get_data(as_text=True)
    assert 'id="drops-included"' in page and "first drops the INVALID index(es)" in page
    assert '<input type="hidden" name="drop_invalid_indexes" value="on">' in page
    # confirming the plan without the drop while asking for it: a different plan, refused
    refused = client.post("/targets/shop/jobs", data={
        "csrf_token": csrf_from(page), "command": "upgrade", "revision": "heads",
        "plan_hash": plain["plan_hash"], "drop_invalid_indexes": "on"})
    assert refused.status_code == 409, refused.get_data(as_text=True)[-400:]
    assert "The plan changed since it was shown" in refused.get_data(as_text=True)
    assert _index_valid(pg_url) is False

    # the job with the option drops it (under the guard), then the upgrade succeeds
    started = client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "heads", "drop_invalid_indexes": True})
    assert started.status_code == 202, started.json
    job = wait_job(client, started.json["job"], headers, timeout=20)
    assert job["status"] == "succeeded", job["log"]
    assert f"{DROP} (the plan drops this INVALID index)" in job["log"]
    assert job["log"].index(DROP) < job["log"].index("upgrade r001 started")
    assert "lock guard on postgresql: lock_timeout 1 s" in job["log"]
    assert _index_valid(pg_url) is True and version_table(pg_url) == {"r001"}
    assert client.get(PLAN_API, headers=headers).json["invalid_indexes"] == []
    with app.app_context():
        confirmed = db.session.execute(db.select(AuditEvent).filter_by(
            action="job.confirm", job_id=job["id"])).scalar_one()
        assert json.loads(confirmed.details)["drop_invalid_indexes"] == [
            "public.ix_big_payload"]


def test_an_approval_request_keeps_the_drop():
    """A protected target's request stores its plan: the job it starts after
    approval is planned again with the drop (so with the approved hash)."""
    from webapp.services.approvals import plan_to_json, request_of

    plan = Plan(target="shop", command="upgrade", revision="heads", current_before=["r000"],
                current_after=["r001"], steps=[], sql="-- sql\n", dialect="postgresql")
    found = [{"schema": "public", "name": "ix", "table": "big", "left_by_job": 3}]
    assert with_invalid_indexes(plan, found, drop=True).drop_indexes == []  # nothing to run
    plan.steps = [PlanStep("r001", "upgrade", ["r000"], "m", None, None)]
    dropping = with_invalid_indexes(plan, found, drop=True)
    assert dropping.drop_indexes == [{"schema": "public", "name": "ix", "table": "big"}]
    assert dropping.hash != with_invalid_indexes(plan, found, drop=False).hash
    stamp = with_invalid_indexes(Plan(**{**plan.__dict__, "command": "stamp"}), found, True)
    assert stamp.drop_indexes == [] and "DROP" not in stamp.sql  # a stamp never drops
    assert plan.hash == with_invalid_indexes(plan, found, drop=False).hash  # sql unchanged
    stored = ApprovalRequest(target="shop", command="upgrade", revision="heads",
                             plan=plan_to_json(dropping))
    assert request_of(object(), stored).drop_invalid_indexes is True
    stored.plan = plan_to_json(plan)
    assert request_of(object(), stored).drop_invalid_indexes is False
