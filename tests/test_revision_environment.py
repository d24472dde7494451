"""``revision_environment = true`` (issue 22, item 12): env.py picks the
version locations at run time, and a target with zero revisions is never
shown as just "up to date".

The fixture is a real Alembic environment whose alembic.ini sets
``revision_environment = true`` and names no version location; its env.py
points Alembic at ``runtime_versions/`` — a folder the ini does not name —
either through the Config (``config.set_main_option("version_locations",
...)``) or by altering the script directory (``context.script.version_locations``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.common import add_user, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import tables, token_headers, version_table, wait_job

from webapp.core.history import HistoryCache

RUNTIME = "runtime_versions"

# Each way an env.py chooses its version locations at run time. Every run of
# env.py is counted in env_runs.log (to check that the dashboard caches what it learnt).
ENV_CHOICES = {
    "config": ('config.set_main_option("version_locations", '
               f'os.path.join(os.path.dirname(os.path.abspath(__file__)), "{RUNTIME}"))'),
    "script": ('context.script.version_locations = ['
               f'os.path.join(os.path.dirname(os.path.abspath(__file__)), "{RUNTIME}")]'),
}
COUNT_RUN = ('with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), '
             '"env_runs.log"), "a") as _log:\n    _log.write("run\\n")\n')


def runtime_env(root: Path, how: str, n: int = 3) -> Path:
    """An environment of ``n`` revisions in ``root/runtime_versions``, found
    only by running its env.py; return its alembic.ini."""
    revs = [Rev(r.revision, r.down, create_date=r.create_date, subdir=RUNTIME)
            for r in linear(n)]
    return make_env(root, revs, ini_extra="revision_environment = true",
                    env_extra=COUNT_RUN + ENV_CHOICES[how])


def env_runs(root: Path) -> int:
    """How many times the environment's env.py ran."""
    log = root / "env_runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def app_for(make_app, tmp_path: Path, monkeypatch, ini: Path, name: str = "orch"):
    url = sqlite_url(tmp_path / f"{name}.db")
    monkeypatch.setenv("REVENV_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {name: {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "REVENV_URL"}}))
    return app, url


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.mark.parametrize("how", sorted(ENV_CHOICES))
def test_history_and_status_come_from_the_locations_env_py_chooses(make_app, tmp_path,
                                                                   monkeypatch, how):
    root = tmp_path / "project"
    ini = runtime_env(root, how)
    app, _ = app_for(make_app, tmp_path, monkeypatch, ini)
    headers = token_headers(app, "vic", "viewer")
    client = app.test_client()
    history = client.get("/api/v1/targets/orch/history", headers=headers)
    assert history.status_code == 200, history.json
    assert [r["revision"] for r in history.json] == ["r002", "r001", "r000"]
    listed = client.get("/api/v1/targets", headers=headers).json[0]
    assert listed["reachable"] is True, listed
    assert listed["current"] == [] and listed["heads"] == ["r002"]
    assert listed["pending"] == 3
    login(client, "vic")
    card = text_of(client.get("/targets/orch/card").get_data(as_text=True))
    assert "3 pending" in card and "up to date" not in card.lower()
    page = text_of(client.get("/targets/orch").get_data(as_text=True))
    assert "Up to date" not in page
    assert "Pending revisions 3" in page
    catalog = app.extensions["alembic_dashboard"]
    found = catalog.history(catalog.get("orch"))
    assert found.version_locations == ((root / RUNTIME).resolve(),)


def test_what_env_py_chooses_is_cached_until_env_py_changes(tmp_path):
    from webapp.core.targets import load_targets

    root = tmp_path / "project"
    ini = runtime_env(root, "config")
    target = load_targets(write_targets_file(tmp_path / "targets.toml", {"orch": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "REVENV_URL"}}))["orch"]
    cache = HistoryCache()
    assert [r.revision for r in cache.get(target).revisions] == ["r002", "r001", "r000"]
    runs = env_runs(root)
    assert runs >= 1
    for _ in range(3):
        assert len(cache.get(target).revisions) == 3
    assert env_runs(root) == runs  # not run again for the same files
    env_py = root / "env.py"
    env_py.write_text(env_py.read_text().replace(f'"{RUNTIME}"', '"elsewhere"'))
    (root / "elsewhere").mkdir()
    history = cache.get(target)
    assert env_runs(root) > runs
    assert history.revisions == []
    assert history.version_locations == ((root / "elsewhere").resolve(),)


@pytest.mark.parametrize("how", sorted(ENV_CHOICES))
def test_an_upgrade_job_reaches_head(make_app, tmp_path, monkeypatch, how):
    root = tmp_path / "project"
    ini = runtime_env(root, how)
    app, url = app_for(make_app, tmp_path, monkeypatch, ini)
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/orch/jobs", headers=headers,
                           json={"command": "upgrade", "revision": "heads"})
    assert response.status_code == 202, response.json
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "succeeded", job
    assert version_table(url) == {"r002"}
    assert {"t_r000", "t_r001", "t_r002"} <= tables(url)
    listed = client.get("/api/v1/targets", headers=headers).json[0]
    assert listed["current"] == ["r002"] and listed["pending"] == 0


def test_a_target_with_zero_revisions_says_why(make_app, tmp_path, monkeypatch):
    root = tmp_path / "empty"
    ini = make_env(root, [])
    app, url = app_for(make_app, tmp_path, monkeypatch, ini, name="bare")
    versions = root / "versions"
    reason = f"no revisions found in {versions}"
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    page = text_of(client.get("/targets/bare").get_data(as_text=True))
    assert reason in page
    assert "Up to date" not in page
    card = text_of(client.get("/targets/bare/card").get_data(as_text=True))
    assert reason in card and "up to date" not in card.lower()
    headers = token_headers(app, "olga", "operator")
    listed = client.get("/api/v1/targets", headers=headers).json[0]
    assert listed["no_revisions"].startswith(reason), listed
    response = client.post("/api/v1/targets/bare/jobs", headers=headers,
                           json={"command": "upgrade", "revision": "heads"})
    assert response.status_code == 409, response.json
    detail = response.json["detail"]
    assert reason in detail, detail
    assert "already at base" not in detail
    assert version_table(url) == set()


def test_zero_revisions_under_revision_environment_names_env_py(make_app, tmp_path,
                                                                monkeypatch):
    root = tmp_path / "project"
    ini = runtime_env(root, "config", n=0)
    (root / RUNTIME).mkdir()
    app, _ = app_for(make_app, tmp_path, monkeypatch, ini)
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    page = text_of(client.get("/targets/orch").get_data(as_text=True))
    assert f"no revisions found in {(root / RUNTIME).resolve()}" in page
    assert "revision_environment" in page


OFFLINE_REFUSED = ('if context.is_offline_mode():\n'
                   '    raise RuntimeError("this env.py runs online only")\n')


def test_env_py_that_fails_offline_still_counts_what_it_chose(make_app, tmp_path,
                                                              monkeypatch):
    root = tmp_path / "project"
    revs = [Rev(r.revision, r.down, create_date=r.create_date, subdir=RUNTIME)
            for r in linear(2)]
    ini = make_env(root, revs, ini_extra="revision_environment = true",
                   env_extra=ENV_CHOICES["config"] + "\n" + OFFLINE_REFUSED)
    app, url = app_for(make_app, tmp_path, monkeypatch, ini)
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    listed = client.get("/api/v1/targets", headers=headers).json[0]
    assert listed["heads"] == ["r001"] and listed["pending"] == 2, listed
    assert listed["no_revisions"] is None
    response = client.post("/api/v1/targets/orch/jobs", headers=headers,
                           json={"command": "upgrade", "revision": "heads"})
    assert response.status_code == 202, response.json
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "succeeded", job
    assert version_table(url) == {"r001"}


def test_env_py_that_fails_before_choosing_is_named_in_the_reason(make_app, tmp_path,
                                                                  monkeypatch):
    root = tmp_path / "project"
    revs = [Rev(r.revision, r.down, create_date=r.create_date, subdir=RUNTIME)
            for r in linear(2)]
    ini = make_env(root, revs, ini_extra="revision_environment = true",
                   env_extra=OFFLINE_REFUSED + ENV_CHOICES["config"])
    app, _ = app_for(make_app, tmp_path, monkeypatch, ini)
    headers = token_headers(app, "vic", "viewer")
    listed = app.test_client().get("/api/v1/targets", headers=headers).json[0]
    reason = listed["no_revisions"]
    assert reason.startswith(f"no revisions found in {root / 'versions'}"), listed
    assert "revision_environment = true" in reason
    assert "RuntimeError: this env.py runs online only" in reason


def test_a_flask_migrate_app_whose_env_py_chooses_the_locations(make_app, tmp_path):
    from support.targetenv import shopapp_project, target_venv

    project = shopapp_project(tmp_path)
    migrations = project / "migrations"
    (migrations / "versions").rename(migrations / RUNTIME)
    (migrations / "versions").mkdir()
    ini = migrations / "alembic.ini"
    ini.write_text(ini.read_text().replace("# revision_environment = false",
                                           "revision_environment = true"))
    env_py = migrations / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "config = context.config\n",
        "config = context.config\nimport os\n" + ENV_CHOICES["script"] + "\n", 1))
    expected = sorted(p.name.split("_")[0] for p in (migrations / RUNTIME).glob("*.py"))
    url = sqlite_url(tmp_path / "shop.db")
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": "shopapp:create_app", "cwd": str(project),
        "python": str(target_venv()), "env": {"SHOPAPP_DATABASE_URL": url}}}))
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    history = client.get("/api/v1/targets/shopapp/history", headers=headers).json
    assert sorted(r["revision"] for r in history) == expected, history
    response = client.post("/api/v1/targets/shopapp/jobs", headers=headers,
                           json={"command": "upgrade", "revision": "heads"})
    assert response.status_code == 202, response.json
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(url) == {history[0]["revision"]}
