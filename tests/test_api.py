"""Read API: shapes fixed (README "API"), bearer token or session."""

from __future__ import annotations

from alembic.config import Config
from alembic.script import ScriptDirectory
from support.common import add_user

from webapp.core.demo import DEMO_START, DEMO_TARGETS_FILE
from webapp.services import accounts

DEMO_INI = DEMO_TARGETS_FILE.parent / "demo" / "alembic.ini"


def token_for(app, username="api-user", role="viewer") -> dict:
    add_user(app, username, role)
    with app.app_context():
        token = accounts.create_token(accounts.get_user(username), "pipeline")
    return {"Authorization": f"Bearer {token}"}


def test_targets_shape(demo_app):
    headers = token_for(demo_app)
    response = demo_app.test_client().get("/api/v1/targets", headers=headers)
    assert response.status_code == 200
    data = response.json
    assert [t["name"] for t in data] == ["demo-staging", "demo-production"]
    script = ScriptDirectory.from_config(Config(str(DEMO_INI)))
    for item in data:
        assert {"name", "tier", "current", "heads", "pending", "reachable"} <= set(item)
        assert item["reachable"] is True
        assert item["current"] == [DEMO_START[item["name"]]]
        assert set(item["heads"]) == set(script.get_heads())
        expected = list(script.revision_map.iterate_revisions(
            "heads", (DEMO_START[item["name"]],), implicit_base=True))
        assert item["pending"] == len(expected)
    assert data[1]["tier"] == "production"


def test_history_shape(demo_app):
    headers = token_for(demo_app)
    data = demo_app.test_client().get("/api/v1/targets/demo-staging/history",
                                      headers=headers).json
    assert len(data) == 15
    by_id = {r["revision"]: r for r in data}
    for item in data:
        assert {"revision", "down_revision", "message", "is_head", "is_branch_point",
                "is_merge_point", "applied"} <= set(item)
        assert isinstance(item["down_revision"], list)
    assert by_id["9c4e1f8b6da8"]["is_merge_point"]
    assert sorted(by_id["9c4e1f8b6da8"]["down_revision"]) == ["6f1b8c5e3a75", "8b3d0e7a5c97"]
    assert by_id["4d9f6a3c1e53"]["is_branch_point"]
    assert by_id["c27b4cbe9a0d"]["is_head"] and not by_id["c27b4cbe9a0d"]["applied"]
    assert by_id["a05f2a9c7eb9"]["applied"] and by_id["1f3a9c2e7b10"]["applied"]
    assert by_id["1f3a9c2e7b10"]["down_revision"] == []
    # newest first: a revision never comes after one of its down revisions
    position = {r["revision"]: i for i, r in enumerate(data)}
    for item in data:
        for down in item["down_revision"]:
            assert position[down] > position[item["revision"]]


def test_auth_errors_are_json(demo_app):
    client = demo_app.test_client()
    assert client.get("/api/v1/targets").status_code == 401
    bad = client.get("/api/v1/targets", headers={"Authorization": "Bearer adb_nope"})
    assert bad.status_code == 401 and bad.is_json
    headers = token_for(demo_app)
    missing = client.get("/api/v1/targets/nope/history", headers=headers)
    assert missing.status_code == 404 and missing.is_json and "nope" in missing.json["detail"]


def test_session_works_for_api(logged_in):
    response = logged_in.get("/api/v1/targets")
    assert response.status_code == 200 and len(response.json) == 2


def test_unreachable_target_in_api(make_app, tmp_path, monkeypatch):
    from support.envtools import write_targets_file

    monkeypatch.setenv("DOWN_URL", "mysql+pymysql://root:pw-secret-9@127.0.0.1:1/x")
    targets = write_targets_file(tmp_path / "t.toml", {"down": {
        "tier": "production", "alembic_ini": str(DEMO_INI), "url_env": "DOWN_URL"}})
    app = make_app(targets)
    headers = token_for(app)
    data = app.test_client().get("/api/v1/targets", headers=headers).json
    assert data[0]["reachable"] is False and data[0]["current"] == []
    assert "pw-secret-9" not in str(data)
    history = app.test_client().get("/api/v1/targets/down/history", headers=headers).json
    assert len(history) == 15 and all(item["applied"] is None for item in history)


def test_session_post_to_api_needs_the_csrf_header(logged_in):
    from support.common import csrf_from

    body = {"command": "upgrade", "revision": "+1"}
    refused = logged_in.post("/api/v1/targets/demo-staging/jobs", json=body)
    assert refused.status_code == 400
    token = csrf_from(logged_in.get("/").get_data(as_text=True))
    accepted = logged_in.post("/api/v1/targets/demo-staging/jobs", json=body,
                              headers={"X-CSRFToken": token})
    assert accepted.status_code == 202
    from support.jobtools import wait_job
    assert wait_job(logged_in, accepted.json["job"])["status"] == "succeeded"
