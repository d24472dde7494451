"""The changelog per target (issue 20, item 3): every applied, reverted or
stamped revision with who, when, job, request, duration and the job's
schema diff from snapshots taken under the target's lock, on SQLite,
MariaDB and PostgreSQL; ``GET /api/v1/targets/<name>/changelog``."""

from __future__ import annotations

import pytest
from support.common import add_user, login
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import token_headers, wait_job

HELPERS = """

def add_email():
    op.add_column("t_r000", sa.Column("email", sa.String(120), nullable=True))
    op.create_index("ix_t_r000_email", "t_r000", ["email"])


def drop_email():
    op.drop_index("ix_t_r000_email", table_name="t_r000")
    with op.batch_alter_table("t_r000") as batch:
        batch.drop_column("email")


def partly():
    op.create_table("half", sa.Column("id", sa.Integer, primary_key=True))
    raise RuntimeError("fails after its first statement")
"""


def revisions() -> list[Rev]:
    return [Rev("r000", None, "create t_r000"),
            Rev("r001", "r000", "add email to t_r000", upgrade="add_email()",
                downgrade="drop_email()", extra_source=HELPERS)]


def shop(make_app, tmp_path, monkeypatch, url: str, revs: list[Rev], role: str = "operator"):
    monkeypatch.setenv("SHOP_URL", url)
    ini = make_env(tmp_path / "env", revs)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL"}}))
    return app, token_headers(app, "olga", role)


def run_job(client, headers, command: str, revision: str) -> dict:
    posted = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": command, "revision": revision})
    assert posted.status_code == 202, posted.json
    return wait_job(client, posted.json["job"], headers)


def test_changelog_records_upgrades_downgrades_and_stamps_with_schema_diffs(
        make_app, tmp_path, monkeypatch, any_db_url):
    app, headers = shop(make_app, tmp_path, monkeypatch, any_db_url, revisions(), "admin")
    client = app.test_client()
    first = run_job(client, headers, "upgrade", "head")
    assert first["status"] == "succeeded", first
    down = run_job(client, headers, "downgrade", "-1")
    assert down["status"] == "succeeded", down
    stamp = run_job(client, headers, "stamp", "r001")
    assert stamp["status"] == "succeeded", stamp

    entries = client.get("/api/v1/targets/shop/changelog", headers=headers).json
    assert [(e["revision"], e["direction"], e["job"]) for e in entries] == [
        ("r001", "stamp", stamp["id"]), ("r001", "downgrade", down["id"]),
        ("r001", "upgrade", first["id"]), ("r000", "upgrade", first["id"])]
    for entry in entries:
        assert set(entry) >= {"revision", "direction", "job", "request", "user", "at",
                              "seconds", "schema_diff"}
        assert entry["user"] == "olga" and entry["request"] is None
        assert entry["at"].endswith("Z")
    assert all(e["seconds"] is not None and e["seconds"] >= 0 for e in entries[1:])

    upgrade_diff = {d["kind"]: d for d in entries[2]["schema_diff"]}
    assert upgrade_diff["add_table"]["object"] == "t_r000"
    assert "email" in upgrade_diff["add_table"]["text"]
    assert [i["columns"] for i in upgrade_diff["add_table"]["after"]["indexes"]] == [["email"]]
    assert "index ix_t_r000_email on t_r000 (email)" in upgrade_diff["add_table"]["text"]
    assert upgrade_diff["version"]["after"] == ["r001"]

    downgrade_kinds = sorted(d["kind"] for d in entries[1]["schema_diff"])
    assert downgrade_kinds == ["drop_column", "drop_index", "version"], entries[1]
    (dropped,) = [d for d in entries[1]["schema_diff"] if d["kind"] == "drop_column"]
    assert dropped["object"] == "t_r000.email" and dropped["after"] is None
    # a stamp changes the version table only
    assert [d["kind"] for d in entries[0]["schema_diff"]] == ["version"]


def test_changelog_pages_and_refuses_bad_input(make_app, tmp_path, monkeypatch):
    (tmp_path / "t.db").touch()
    app, headers = shop(make_app, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}",
                        revisions())
    client = app.test_client()
    run_job(client, headers, "upgrade", "head")
    newest = client.get("/api/v1/targets/shop/changelog?limit=1", headers=headers).json
    assert [e["revision"] for e in newest] == ["r001"]
    older = client.get(f"/api/v1/targets/shop/changelog?before={newest[0]['id']}",
                       headers=headers).json
    assert [e["revision"] for e in older] == ["r000"]
    for bad in ("limit=0", "limit=501", "limit=x", "before=-1"):
        answer = client.get(f"/api/v1/targets/shop/changelog?{bad}", headers=headers)
        assert answer.status_code == 400 and answer.json["error"] == "bad_input", bad
    missing = client.get("/api/v1/targets/nope/changelog", headers=headers)
    assert missing.status_code == 404 and missing.json["error"] == "not_found"


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_a_failed_job_that_left_ddl_behind_is_in_the_changelog(
        make_app, tmp_path, monkeypatch, dialect, request):
    """Non-transactional DDL (pysqlite commits it, MariaDB always): the
    failing revision's first statement stayed, and the changelog says so."""
    if dialect == "sqlite":
        (tmp_path / "t.db").touch()
        url = f"sqlite:///{tmp_path / 't.db'}"
    else:
        url = request.getfixturevalue("mysql_url")
    app, headers = shop(make_app, tmp_path, monkeypatch, url,
                        [Rev("r000", None), Rev("r001", "r000", upgrade="partly()",
                                                    extra_source=HELPERS)])
    client = app.test_client()
    job = run_job(client, headers, "upgrade", "head")
    assert job["status"] == "failed"
    entries = client.get("/api/v1/targets/shop/changelog", headers=headers).json
    assert entries[0]["revision"] == "r001" and entries[0]["status"] == "failed"
    assert [d["object"] for d in entries[0]["schema_diff"] if d["kind"] == "add_table"] == \
        ["half", "t_r000"]
    assert entries[1]["revision"] == "r000" and entries[1]["status"] == "succeeded"


def test_the_changelog_needs_a_role_on_the_target(make_app, tmp_path, monkeypatch):
    (tmp_path / "t.db").touch()
    app, headers = shop(make_app, tmp_path, monkeypatch, f"sqlite:///{tmp_path / 't.db'}",
                        revisions())
    add_user(app, "vic", "viewer")
    client = app.test_client()
    assert client.get("/api/v1/targets/shop/changelog").status_code in (401, 302)
    login(client, "vic")
    assert client.get("/api/v1/targets/shop/changelog").json == []


def test_changelog_pages_target_page_and_revision_page(make_app, tmp_path, monkeypatch):
    """The changelog page, the target page's newest entries, and the revision
    page's "applied here / pending there" across two targets of one project."""
    ini = make_env(tmp_path / "env", revisions())
    for name in ("staging", "production"):
        (tmp_path / f"{name}.db").touch()
        monkeypatch.setenv(f"URL_{name.upper()}", f"sqlite:///{tmp_path / name}.db")
    app = make_app(write_targets_file(tmp_path / "targets.toml", {
        name: {"tier": name, "alembic_ini": str(ini), "url_env": f"URL_{name.upper()}"}
        for name in ("staging", "production")}))
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/staging/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded"
    add_user(app, "vic", "viewer")
    login(client, "vic")

    page = client.get("/targets/staging/changelog").get_data(as_text=True)
    assert 'id="changelog"' in page
    assert page.index("add email to t_r000") < page.index("create t_r000")  # newest first
    assert f'href="/jobs/{job["id"]}">#{job["id"]}</a>' in page
    assert "add table t_r000" in page and "alembic_version base → r001" in page
    overview = client.get("/targets/staging").get_data(as_text=True)
    assert 'id="recent-changes"' in overview and "add email to t_r000" in overview
    empty = client.get("/targets/production/changelog").get_data(as_text=True)
    assert "No job has changed this database" in empty

    revision = client.get("/targets/production/revisions/r001").get_data(as_text=True)
    where = revision[revision.index('id="where-applied"'):]
    staging = where[where.index('href="/targets/staging"'):where.index("</li>")]
    assert "<strong>applied</strong>" in staging and f"job #{job['id']}" in staging
    assert "by olga" in staging
    production = where[where.index('href="/targets/production"'):]
    assert "<strong>pending</strong>" in production[:production.index("</li>")]
    assert client.get("/targets/staging/changelog?before=x").status_code == 400
