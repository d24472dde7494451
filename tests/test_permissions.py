"""Per-target permissions: roles granted per target ([targets.NAME.policy])
and per tier ([tiers.TIER.policy]) to groups and users; pages, buttons, the
API and the audit log follow them."""

from __future__ import annotations

import json

import pytest
from support.common import add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

from webapp.core.permissions import Role
from webapp.core.targets import TargetsFileError, load_targets
from webapp.models import AuditEvent
from webapp.services import accounts


@pytest.fixture
def granted_app(make_app, tmp_path, monkeypatch):
    """prod (production, 1 approval, approvers group:dba), stage (staging;
    the staging tier grants operator to group:devs), secret (viewers user:vera)."""
    ini = make_env(tmp_path / "env", linear(2))
    targets = {}
    for name, tier, policy in [
            ("prod", "production", {"approvals_required": 1, "approvers": ["group:dba"]}),
            ("stage", "staging", {}),
            ("secret", "development", {"viewers": ["user:vera"]})]:
        monkeypatch.setenv(f"{name.upper()}_URL", sqlite_url(tmp_path / f"{name}.db"))
        (tmp_path / f"{name}.db").touch()
        targets[name] = {"tier": tier, "alembic_ini": str(ini), "url_env": f"{name.upper()}_URL",
                         "policy": policy}
    path = write_targets_file(tmp_path / "targets.toml", targets)
    with open(path, "a") as f:
        f.write('\n[tiers.staging.policy]\noperators = ["group:devs"]\n')
    app = make_app(path)
    for name, role, groups in [("dev", "none", ["devs"]), ("dan", "none", ["dba"]),
                               ("vera", "none", []), ("olga", "operator", [])]:
        add_user(app, name, role)
        with app.app_context():
            accounts.set_groups(accounts.get_user(name), groups)
    return app


def bearer(app, name: str) -> dict:
    with app.app_context():
        return {"Authorization": "Bearer " + accounts.create_token(accounts.get_user(name),
                                                                     "t")}


def events(app, action: str) -> list[dict]:
    with app.app_context():
        from webapp.extensions import db
        rows = db.session.execute(db.select(AuditEvent).filter_by(action=action)).scalars()
        return [{"user": e.username, "outcome": e.outcome, "target": e.target,
                 **json.loads(e.details)} for e in rows]


def test_targets_file_grants_and_tier_grants_are_read(granted_app):
    with granted_app.app_context():
        targets = granted_app.extensions["alembic_dashboard"].targets
        assert targets["prod"].policy.grants.approvers == ("group:dba",)
        assert targets["stage"].tier_grants.operators == ("group:devs",)
        assert targets["prod"].tier_grants.is_empty
        dev, dan = accounts.get_user("dev"), accounts.get_user("dan")
        assert accounts.role_on(dev, targets["stage"]) == Role.OPERATOR
        assert accounts.role_on(dev, targets["prod"]) == Role.NONE
        assert accounts.role_on(dan, targets["prod"]) == Role.APPROVER
        olga = accounts.get_user("olga")  # global role: max(global, grants)
        assert accounts.role_on(olga, targets["secret"]) == Role.OPERATOR
        assert accounts.access_on(dan, targets["prod"]).granted_by(Role.APPROVER) == [
            "group:dba on target prod (approver)"]


@pytest.mark.parametrize("snippet, key", [
    ('[targets.x.policy]\napprovers = "group:dba"\n', "targets.x.policy.approvers"),
    ('[targets.x.policy]\napprovers = ["dba"]\n', "targets.x.policy.approvers"),
    ('[tiers.prod.policy]\nviewers = ["group:a"]\n', "tiers.prod"),
    ('[tiers.staging.policy]\napprovals_required = 1\n', "tiers.staging.policy.approvals_required"),
])
def test_bad_grants_in_the_targets_file_name_the_key(tmp_path, snippet, key):
    ini = make_env(tmp_path / "env", linear(1))
    path = tmp_path / "targets.toml"
    path.write_text(f'[targets.x]\ntier = "staging"\nalembic_ini = "{ini}"\nurl_env = "X"\n'
                    + snippet)
    with pytest.raises(TargetsFileError) as info:
        load_targets(path)
    assert info.value.key == key


def test_dashboard_and_api_lists_show_only_granted_targets(granted_app):
    client = granted_app.test_client()
    assert {t["name"] for t in client.get("/api/v1/targets",
                                          headers=bearer(granted_app, "dev")).json} == {"stage"}
    assert {t["name"] for t in client.get("/api/v1/targets",
                                          headers=bearer(granted_app, "olga")).json} == {
        "prod", "stage", "secret"}
    login(client, "vera")
    page = client.get("/").get_data(as_text=True)
    assert 'data-target="secret"' in page and 'data-target="stage"' not in page
    assert client.get("/targets/secret").status_code == 200
    # no role on stage: answered like a name that does not exist (issue 17, finding 6)
    assert client.get("/targets/stage").status_code == 404
    assert client.get("/api/v1/targets/stage/history").status_code == 404
    denied = [e for e in events(granted_app, "access") if e["outcome"] == "denied"]
    assert {e["target"] for e in denied} == {"stage"}


def test_tier_grant_lets_a_group_run_jobs_there_and_is_audited(granted_app):
    client = granted_app.test_client()
    dev = bearer(granted_app, "dev")
    refused = client.post("/api/v1/targets/prod/jobs", headers=dev,
                          json={"command": "upgrade", "revision": "heads"})
    # no role on prod: answered like a name that does not exist (issue 17, finding 6)
    assert refused.status_code == 404 and refused.json["error"] == "not_found"
    started = client.post("/api/v1/targets/stage/jobs", headers=dev,
                          json={"command": "upgrade", "revision": "heads"})
    assert started.status_code == 202, started.json
    assert wait_job(client, started.json["job"], dev)["status"] == "succeeded"
    confirm = events(granted_app, "job.confirm")
    assert confirm[0]["user"] == "dev"
    assert confirm[0]["granted_by"] == ["group:devs on tier staging (operator)"]
    # buttons follow the grant: the operator actions on stage, none on secret for vera
    login(client, "dev")
    assert 'id="actions"' in client.get("/targets/stage").get_data(as_text=True)
    assert client.get("/targets/stage/plan?command=upgrade&revision=heads").status_code == 200
    vera = granted_app.test_client()
    login(vera, "vera")
    assert 'id="actions"' not in vera.get("/targets/secret").get_data(as_text=True)
    assert vera.get("/targets/secret/plan?command=upgrade&revision=heads").status_code == 403


def test_target_grant_makes_a_group_approver_through_the_form(granted_app):
    client = granted_app.test_client()
    olga = bearer(granted_app, "olga")
    created = client.post("/api/v1/targets/prod/jobs", headers=olga,
                          json={"command": "upgrade", "revision": "heads", "reason": "r1"})
    assert created.status_code == 202 and "request" in created.json
    request_id = created.json["request"]
    assert events(granted_app, "request.create")[0]["granted_by"] == ["global role (operator)"]
    # a global operator is no approver; dev (no role on prod) cannot even see it
    other = token_headers(granted_app, "oscar", "operator")
    assert client.post(f"/api/v1/requests/{request_id}/approve", headers=other,
                       json={}).status_code == 403
    assert client.get("/api/v1/requests", headers=bearer(granted_app, "dev")).json == []
    login(client, "dan")
    page = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert 'id="approve"' in page
    answer = client.post(f"/requests/{request_id}/approve",
                         data={"csrf_token": csrf_from(page), "comment": "ok",
                               "without_viewing": "on"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    approve = events(granted_app, "request.approve")[0]
    assert approve["user"] == "dan"
    assert approve["granted_by"] == ["group:dba on target prod (approver)"]
    audit_page = granted_app.test_client()
    login(audit_page, "olga")
    assert audit_page.get("/audit").status_code == 403  # audit log: global approver/admin


def test_set_groups_cli_and_none_role(granted_app):
    runner = granted_app.test_cli_runner()
    result = runner.invoke(args=["set-groups", "vera", "dba,devs"])
    assert result.exit_code == 0 and "dba, devs" in result.output
    with granted_app.app_context():
        assert accounts.get_user("vera").groups == ["dba", "devs"]
    assert runner.invoke(args=["set-groups", "vera", "bad group"]).exit_code != 0
    assert runner.invoke(args=["set-groups", "nobody", "x"]).exit_code != 0
    result = runner.invoke(args=["create-user", "nora", "--role", "none", "--password-stdin"],
                           input="correct horse battery\n")
    assert result.exit_code == 0, result.output
    client = granted_app.test_client()
    login(client, "nora")
    assert 'id="no-targets"' in client.get("/").get_data(as_text=True)


def test_rollouts_are_shown_only_to_those_who_see_all_their_targets(granted_app):
    client = granted_app.test_client()
    olga = bearer(granted_app, "olga")
    created = client.post("/api/v1/rollouts", headers=olga, json={
        "command": "upgrade", "revision": "heads", "targets": ["stage", "secret"],
        "paused": True})
    assert created.status_code == 202, created.json
    rollout_id = created.json["id"]
    dev = bearer(granted_app, "dev")  # sees stage (tier grant), not secret
    assert client.get("/api/v1/rollouts", headers=dev).json == []
    assert client.get(f"/api/v1/rollouts/{rollout_id}", headers=dev).status_code == 403
    assert [r["id"] for r in client.get("/api/v1/rollouts", headers=olga).json] == [rollout_id]
    refused = client.post("/api/v1/rollouts", headers=dev, json={
        "command": "upgrade", "revision": "heads", "targets": ["stage", "prod"]})
    # prod is hidden from dev: answered like a name that does not exist
    assert refused.status_code == 404 and refused.json["error"] == "not_found"
    missing = client.post("/api/v1/rollouts", headers=dev, json={
        "command": "upgrade", "revision": "heads", "targets": ["stage", "nosuch"]})
    assert missing.status_code == 404
    assert missing.json["detail"].replace("nosuch", "NAME") == \
        refused.json["detail"].replace("prod", "NAME")
    login(client, "dev")
    assert client.get(f"/rollouts/{rollout_id}").status_code == 403
    page = client.get("/rollouts").get_data(as_text=True)
    assert 'id="new-rollout"' in page and f'data-rollout="{rollout_id}"' not in page


def test_admin_page_lists_grants_and_a_token_ceiling_caps_a_grant(granted_app):
    add_user(granted_app, "root", "admin")
    admin = granted_app.test_client()
    login(admin, "root")
    page = admin.get("/admin/users").get_data(as_text=True)
    row = page.split('id="user-dan"', 1)[1].split("</tr>", 1)[0]
    assert "<strong>prod</strong>: approver" in row and "group:dba on target prod" in row
    assert "stage" not in row
    dev_row = page.split('id="user-dev"', 1)[1].split("</tr>", 1)[0]
    assert "<strong>stage</strong>: operator" in dev_row and "group:devs on tier staging" in dev_row
    olga_row = page.split('id="user-olga"', 1)[1].split("</tr>", 1)[0]
    assert "only the global role" in olga_row

    # dev is operator on stage only through the tier grant; a viewer-capped token stays viewer
    with granted_app.app_context():
        token = accounts.create_token(accounts.get_user("dev"), "ro", ceiling="viewer")
    capped = {"Authorization": f"Bearer {token}"}
    client = granted_app.test_client()
    assert [t["name"] for t in client.get("/api/v1/targets", headers=capped).json] == ["stage"]
    refused = client.post("/api/v1/targets/stage/jobs", headers=capped,
                          json={"command": "upgrade", "revision": "heads"})
    assert refused.status_code == 403 and "your role there is viewer" in refused.json["detail"]
    assert events(granted_app, "job.confirm") == []
