"""Targets that live in their own virtualenv (a package the dashboard does not
have), and a Flask-Migrate app: history, status, plan, upgrade, downgrade
through the dashboard equal what the project's own tools report."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest
from support.common import add_user, login
from support.envtools import sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.targetenv import (
    set_sqlalchemy_url,
    shop_project,
    shopapp_project,
    target_bin,
    target_venv,
)

SCRIPT_INFO = """
import json, sys
from alembic.config import Config
from alembic.script import ScriptDirectory
script = ScriptDirectory.from_config(Config(sys.argv[1]))
print(json.dumps({"heads": sorted(script.get_heads()), "revisions": {
    s.revision: sorted(s._versioned_down_revisions) for s in script.walk_revisions()}}))
"""


@pytest.fixture(scope="module")
def venv_python():
    return str(target_venv())


def test_dashboard_cannot_import_the_project_code():
    import importlib.util

    assert importlib.util.find_spec("shopkit") is None
    assert importlib.util.find_spec("flask_migrate") is None


def plain_app(make_app, tmp_path, monkeypatch, venv_python, url):
    project = shop_project(tmp_path)
    monkeypatch.setenv("SHOP_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(project / "alembic.ini"),
        "python": venv_python, "cwd": str(project), "url_env": "SHOP_URL"}})
    return make_app(targets), project


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_plain_project_in_its_own_venv(make_app, tmp_path, monkeypatch, venv_python, dialect,
                                       request):
    url = (sqlite_url(tmp_path / 'shop.db') if dialect == "sqlite"
           else request.getfixturevalue("mysql_url"))
    app, project = plain_app(make_app, tmp_path, monkeypatch, venv_python, url)
    headers = token_headers(app, "op", "admin")
    client = app.test_client()

    # history equals Alembic's own ScriptDirectory, run in the project's venv
    expected = json.loads(subprocess.run(
        [venv_python, "-c", SCRIPT_INFO, str(project / "alembic.ini")], cwd=project,
        check=True, capture_output=True, text=True).stdout)
    history = client.get("/api/v1/targets/shop/history", headers=headers).json
    assert {r["revision"]: sorted(r["down_revision"]) for r in history} == \
        expected["revisions"]
    assert sorted(r["revision"] for r in history if r["is_head"]) == expected["heads"]
    assert history[0]["revision"] == "s1a000000004"  # its down_revision is computed

    # plan → upgrade → status, the revision files importing shopkit.types
    add_user(app, "vic", "viewer")
    ui = app.test_client()
    login(ui, "vic")
    sql = ui.get("/targets/shop/revisions/s1a000000002/sql",
                 headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "invoices" in sql and "Offline SQL could not be generated" not in sql
    job = client.post("/api/v1/targets/shop/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json
    done = wait_job(client, job["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    assert version_table(url) == {"s1a000000004"} == set(done["to"])
    targets = client.get("/api/v1/targets", headers=headers).json
    assert targets[0]["current"] == ["s1a000000004"] and targets[0]["pending"] == 0

    # the project's own CLI, in its venv, agrees (its env.py reads sqlalchemy.url)
    set_sqlalchemy_url(project / "alembic.ini", url)
    cli = subprocess.run([str(target_bin("alembic")), "-c", str(project / "alembic.ini"),
                          "current"], cwd=project, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert re.findall(r"^(\w+) \(head\)", cli.stdout, re.M) == ["s1a000000004"]

    job = client.post("/api/v1/targets/shop/jobs", headers=headers,
                      json={"command": "downgrade", "revision": "s1a000000002"}).json
    done = wait_job(client, job["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    assert version_table(url) == {"s1a000000002"}


def flask_cli(project, url, *args) -> str:
    result = subprocess.run([str(target_bin("flask")), "--app", "shopapp:create_app", "db",
                             *args], cwd=project, capture_output=True, text=True,
                            env={**os.environ, "SHOPAPP_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_flask_migrate_app_equals_flask_db(make_app, tmp_path, monkeypatch, venv_python,
                                           dialect, request):
    url = (sqlite_url(tmp_path / 'shopapp.db') if dialect == "sqlite"
           else request.getfixturevalue("mysql_url"))
    project = shopapp_project(tmp_path)
    targets = write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": "shopapp:create_app", "cwd": str(project),
        "python": venv_python, "env": {"SHOPAPP_DATABASE_URL": url}}})
    app = make_app(targets)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()

    flask_history = flask_cli(project, url, "history")
    history = client.get("/api/v1/targets/shopapp/history", headers=headers).json
    assert [r["revision"] for r in history] == re.findall(r"-> (\w+)", flask_history)
    assert all(not r["applied"] for r in history)

    job = client.post("/api/v1/targets/shopapp/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json
    assert "job" in job, job
    done = wait_job(client, job["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    current = flask_cli(project, url, "current")
    assert done["to"] == re.findall(r"^(\w{12}) \(head\)", current, re.M)
    status = client.get("/api/v1/targets", headers=headers).json[0]
    assert status["current"] == done["to"] and status["reachable"]

    job = client.post("/api/v1/targets/shopapp/jobs", headers=headers,
                      json={"command": "downgrade", "revision": "-1"}).json
    assert "job" in job, job
    done = wait_job(client, job["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    current = flask_cli(project, url, "current")
    assert done["to"] == re.findall(r"^(\w{12})", current, re.M) == ["8881aa68bfe3"]
    # the same downgrade via flask db gives the same state the dashboard reads
    flask_cli(project, url, "downgrade")
    assert client.get("/api/v1/targets", headers=headers).json[0]["current"] == [
        "1aaf1810114d"]


def test_errors_are_shown_and_other_targets_keep_working(make_app, tmp_path, monkeypatch,
                                                         venv_python):
    project = shop_project(tmp_path / "a")
    app_project = shopapp_project(tmp_path / "b")
    good = shop_project(tmp_path / "c")
    monkeypatch.setenv("SHOP_URL", sqlite_url(tmp_path / 'x.db'))
    import sqlalchemy as sa
    sa.create_engine(sqlite_url(tmp_path / 'x.db')).connect().close()  # an empty database
    # an interpreter that existed at start (a missing one is refused then) and
    # was removed afterwards
    gone = tmp_path / "gone" / "bin" / "python"
    gone.parent.mkdir(parents=True)
    gone.write_text("#!/bin/sh\n", encoding="utf-8")
    gone.chmod(0o755)
    targets = write_targets_file(tmp_path / "targets.toml", {
        "no-python": {"tier": "staging", "alembic_ini": str(project / "alembic.ini"),
                      "python": str(gone), "cwd": str(project),
                      "url_env": "SHOP_URL"},
        "factory-raises": {"tier": "staging", "flask_app": "shopapp:create_app",
                           "cwd": str(app_project), "python": venv_python},
        "good": {"tier": "staging", "alembic_ini": str(good / "alembic.ini"),
                 "python": venv_python, "cwd": str(good), "url_env": "SHOP_URL"},
    })
    app = make_app(targets)
    gone.unlink()
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    # missing interpreter: history still reads from source except the computed file
    card = client.get("/targets/no-python/card").get_data(as_text=True)
    assert "interpreter not found" in card
    # the app factory raises (SHOPAPP_DATABASE_URL unset): the card says so
    card = client.get("/targets/factory-raises/card").get_data(as_text=True)
    assert "unreachable" in card and "RuntimeError" in card
    assert "set SHOPAPP_DATABASE_URL" in card
    good_card = client.get("/targets/good/card").get_data(as_text=True)
    assert "unreachable" not in good_card and "pending" in good_card
    assert client.get("/targets/good/history").status_code == 200
    assert "s1a000000004" in client.get("/targets/good/history").get_data(as_text=True)
    for name in ("no-python", "factory-raises"):
        for url in (f"/targets/{name}", f"/targets/{name}/history"):
            assert client.get(url).status_code == 200
    sql = client.get("/targets/no-python/revisions/s1a000000001/sql",
                     headers={"HX-Request": "true"}).get_data(as_text=True)
    assert f"interpreter not found: {gone}" in sql


def revision_body(source: str, function: str) -> str:
    match = re.search(rf"def {function}\(\):\n(.*?)(?=\n\n\ndef |\Z)", source, re.S)
    return "\n".join(line for line in match.group(1).splitlines()
                     if '"""' not in line).strip()


@pytest.mark.parametrize("dialect", ["sqlite", "mysql"])
def test_preview_of_a_project_in_its_own_venv(make_app, tmp_path, monkeypatch, venv_python,
                                              dialect, request):
    import sqlalchemy as sa

    url = (sqlite_url(tmp_path / 'shop.db') if dialect == "sqlite"
           else request.getfixturevalue("mysql_url"))
    app, project = plain_app(make_app, tmp_path, monkeypatch, venv_python, url)
    from webapp.core.runner import run_command

    run_command(app.extensions["alembic_dashboard"].get("shop"), "upgrade", "head", url=url)
    add_user(app, "vic", "viewer")
    ui = app.test_client()
    login(ui, "vic")
    clean = ui.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    assert 'id="no-changes"' in clean.get_data(as_text=True)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_invoices_issued_on" if dialect == "sqlite"
                             else "DROP INDEX ix_invoices_issued_on ON invoices"))
    engine.dispose()
    changed = ui.get("/targets/shop/preview/result", headers={"HX-Request": "true"})
    text = re.sub(r"<[^>]+>", "", changed.get_data(as_text=True))
    assert "add index ix_invoices_issued_on on invoices" in text
    assert "create_index" in text


def test_flask_migrate_revision_equals_flask_db_migrate(make_app, tmp_path, monkeypatch,
                                                        venv_python):
    import sqlalchemy as sa

    projects, urls = [], []
    for name in ("dash", "cli"):
        project = shopapp_project(tmp_path / name)
        url = sqlite_url(tmp_path / name / 'shopapp.db')
        flask_cli(project, url, "upgrade")
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # the database lost a column the models have
            conn.execute(sa.text('ALTER TABLE "order" DROP COLUMN note'))
        engine.dispose()
        projects.append(project)
        urls.append(url)
    targets = write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": "shopapp:create_app", "cwd": str(projects[0]),
        "python": venv_python, "env": {"SHOPAPP_DATABASE_URL": urls[0]},
        "policy": {"allow_revision_authoring": True}}})
    app = make_app(targets)
    add_user(app, "olga", "operator")
    ui = app.test_client()
    login(ui, "olga")
    page = ui.get("/targets/shopapp/preview/result").get_data(as_text=True)
    assert "add column order.note VARCHAR(200) NULL" in re.sub(r"<[^>]+>", "", page)
    from support.common import csrf_from

    response = ui.post("/targets/shopapp/revisions", data={
        "csrf_token": csrf_from(page), "kind": "autogenerate", "message": "restore note"})
    assert response.status_code == 303, response.get_data(as_text=True)[-800:]
    new_rev = response.headers["Location"].rsplit("/", 1)[1]
    ours = next((projects[0] / "migrations" / "versions").glob(f"{new_rev}_*.py")).read_text()
    flask_cli(projects[1], urls[1], "migrate", "-m", "restore note")
    theirs_path = [p for p in (projects[1] / "migrations" / "versions").glob("*.py")
                   if "restore_note" in p.name][0]
    theirs = theirs_path.read_text()
    assert revision_body(ours, "upgrade") == revision_body(theirs, "upgrade")
    assert revision_body(ours, "downgrade") == revision_body(theirs, "downgrade")
    assert "add_column" in revision_body(ours, "upgrade")
    # flask db sees the dashboard's revision as its head
    assert new_rev in flask_cli(projects[0], urls[0], "heads")
