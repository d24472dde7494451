"""Promotion from staging (issue 20, item 5): an upgrade on a target whose
policy names ``promote_from`` is refused (409 ``not_promoted``) until every
revision it applies ran on that target with the same file, and, when the
policy asks, a passing rehearsal of the exact plan exists; the plan page
says why, the request page shows the evidence; an approved request is
checked again when its job starts; stamps are not gated; the targets file
rules of the keys."""

from __future__ import annotations

import json
import re

import pytest
from support.common import add_user, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.core.targets import TargetsFileError, load_targets
from webapp.models import AuditEvent


def promoted_app(make_app, tmp_path, monkeypatch, **prod_policy):
    """``staging`` (unprotected) and ``prod`` (1 approval, promoted from
    staging) on one script directory (r000 -> r001 -> r002)."""
    ini = make_env(tmp_path / "env", linear(3))
    spec = {}
    for name, tier in (("staging", "staging"), ("prod", "production")):
        var = f"{name.upper()}_URL"
        monkeypatch.setenv(var, sqlite_url(tmp_path / f"{name}.db"))
        spec[name] = {"tier": tier, "alembic_ini": str(ini), "url_env": var}
    spec["prod"]["policy"] = {"approvals_required": 1, "promote_from": "staging",
                              **prod_policy}
    app = make_app(write_targets_file(tmp_path / "targets.toml", spec))
    return app, {"olga": token_headers(app, "olga", "operator"),
                 "anna": token_headers(app, "anna", "approver")}


def upgrade(client, headers, target: str, revision: str = "head"):
    return client.post(f"/api/v1/targets/{target}/jobs", headers=headers, json={
        "command": "upgrade", "revision": revision, "reason": "release 7"})


def test_prod_waits_for_staging_and_a_rehearsal_and_shows_the_evidence(
        make_app, tmp_path, monkeypatch):
    app, h = promoted_app(make_app, tmp_path, monkeypatch, promote_requires_rehearsal=True)
    client = app.test_client()
    refused = upgrade(client, h["olga"], "prod")
    assert refused.status_code == 409 and refused.json["error"] == "not_promoted"
    assert "prod is promoted from staging: revision r000 is not applied on staging yet" \
        in refused.json["detail"]
    # only r000 on staging: r001 and r002 are still missing
    wait_job(client, upgrade(client, h["olga"], "staging", "r000").json["job"], h["olga"])
    refused = upgrade(client, h["olga"], "prod").json["detail"]
    assert "r000" not in refused and "revision r001 is not applied" in refused
    job = upgrade(client, h["olga"], "staging").json["job"]
    assert wait_job(client, job, h["olga"])["status"] == "succeeded"
    # a file edited since staging ran it is not the same revision
    path = tmp_path / "env" / "versions" / "r001_rev.py"
    original = path.read_text()
    path.write_text(original.replace("sa.String(50)", "sa.String(80)"))
    edited = upgrade(client, h["olga"], "prod").json["detail"]
    assert "revision r001 was applied on staging with a different file" in edited
    path.write_text(original)
    # the policy also wants a passing rehearsal of this exact plan on prod
    no_rehearsal = upgrade(client, h["olga"], "prod")
    assert no_rehearsal.status_code == 409
    assert "prod requires a passing rehearsal of this exact plan: none was run" in \
        no_rehearsal.json["detail"]
    add_user(app, "olgaui", "operator")
    ui = app.test_client()
    login(ui, "olgaui")
    page = ui.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert 'id="not-promoted"' in page and 'id="request-approval"' not in page
    assert "requires a passing rehearsal" in page
    assert re.search(rf'id="promotion-r001">.*?by job <a href="/jobs/{job}">#{job}</a>, '
                     r'<span class="ok">same file', page)
    rehearsed = client.post("/api/v1/targets/prod/rehearsals", headers=h["olga"],
                            json={"command": "upgrade", "revision": "head"})
    assert rehearsed.status_code == 201 and rehearsed.json["passed"], rehearsed.json
    page = ui.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert 'id="not-promoted"' not in page and 'id="request-approval"' in page
    created = upgrade(client, h["olga"], "prod")
    assert created.status_code == 202, created.json
    request_id = created.json["request"]
    anna = app.test_client()
    login(anna, "anna")
    shown = anna.get(f"/requests/{request_id}").get_data(as_text=True)
    checks = re.search(r'id="checks".*?</section>', shown, re.S).group(0)
    assert "✔ Promoted from staging" in checks and "Rehearsal of this plan on prod " \
        "(required): <span class=\"ok\">✔ passed" in checks
    assert f'href="/jobs/{job}">#{job}</a>' in checks
    # staging steps back before the approval: the job does not start, the request stays
    # approved and says why (checked again when its job starts)
    back = client.post("/api/v1/targets/staging/jobs", headers=h["olga"],
                       json={"command": "downgrade", "revision": "-1"})
    wait_job(client, back.json["job"], h["olga"])
    approved = client.post(f"/api/v1/requests/{request_id}/approve", headers=h["anna"],
                           json={"comment": "ok", "without_viewing": True})
    assert approved.status_code == 200, approved.json
    listed = client.get("/api/v1/requests", headers=h["anna"]).json[0]
    assert listed["status"] == "approved" and listed.get("job") is None
    assert "revision r002 is not applied on staging yet" in listed["note"]
    assert version_table(sqlite_url(tmp_path / "prod.db")) == set()
    with app.app_context():
        from webapp.extensions import db
        row = db.session.execute(db.select(AuditEvent).filter_by(
            action="request.run", outcome="refused")).scalar_one()
        assert json.loads(row.details)["reason"] == "not_promoted"
    # stamps (and downgrades) are not promotion-gated
    stamp = client.post("/api/v1/targets/prod/jobs", headers=token_headers(
        app, "adam", "admin"), json={
        "command": "stamp", "revision": "r002", "reason": "adopt"})
    assert stamp.status_code == 202, stamp.json


@pytest.mark.parametrize(("policy", "message"), [
    ({"promote_from": "stagin"}, "key targets.prod.policy.promote_from: names no configured "
                                 "target: 'stagin' (known: staging)"),
    ({"promote_from": "prod"}, "must name another target"),
    ({"promote_requires_stairway": True}, "key targets.prod.policy.promote_requires_stairway"
                                          ": needs promote_from"),
    ({"promote_from": "staging", "promote_requires_rehearsal": "yes"}, "must be true or false"),
])
def test_promotion_keys_in_the_targets_file(tmp_path, policy, message):
    ini = make_env(tmp_path / "env", linear(1))
    path = write_targets_file(tmp_path / "targets.toml", {
        "staging": {"tier": "staging", "alembic_ini": str(ini), "url_env": "S_URL"},
        "prod": {"tier": "production", "alembic_ini": str(ini), "url_env": "P_URL",
                 "policy": policy}})
    with pytest.raises(TargetsFileError) as raised:
        load_targets(path)
    assert message in str(raised.value)
    good = write_targets_file(tmp_path / "good.toml", {
        "staging": {"tier": "staging", "alembic_ini": str(ini), "url_env": "S_URL"},
        "prod": {"tier": "production", "alembic_ini": str(ini), "url_env": "P_URL",
                 "policy": {"promote_from": "staging", "promote_requires_stairway": True}}})
    prod = load_targets(good)["prod"].policy
    assert (prod.promote_from, prod.promote_requires_rehearsal,
            prod.promote_requires_stairway) == ("staging", False, True)
