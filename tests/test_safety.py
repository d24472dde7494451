"""Safety on real projects: read-only pages never write to a database, the
agent runs as its own package, one target's problem stays on its card, and
the failures of env.py, batch operations and package resources are told
plainly. Each test reproduces a defect found on real open-source projects."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import sqlalchemy as sa
from support.common import add_user, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.core.runner import run_command

ROOT = Path(__file__).resolve().parents[1]

# a project whose env.py takes the database URL from its own settings
ENV_OWN_URL = '''
if os.environ.get("APP_DATABASE_URL"):  # the project's settings decide the database
    config.set_main_option("sqlalchemy.url", os.environ["APP_DATABASE_URL"])
'''
BATCH_DROP = 'with op.batch_alter_table("t_r000") as batch: batch.drop_column("name")'
BATCH_ADD = ('with op.batch_alter_table("t_r000") as batch: '
             'batch.add_column(sa.Column("name", sa.String(50)))')


def batch_revisions() -> list[Rev]:
    """r000 creates t_r000; r001 drops a column in batch mode (SQLite: a table
    rebuild Alembic cannot render offline)."""
    return [Rev("r000", None),
            Rev("r001", "r000", upgrade=BATCH_DROP, downgrade=BATCH_ADD)]


def app_with(make_app, tmp_path, targets: dict, role: str = "admin"):
    """App + logged-in client for ``targets`` (a targets-file mapping)."""
    app = make_app(write_targets_file(tmp_path / "targets.toml", targets))
    add_user(app, "alice", role)
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    return app, client


def text(response) -> str:
    return re.sub(r"<[^>]+>", "", response.get_data(as_text=True))


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_get_writes_when_env_py_picks_its_own_database(make_app, tmp_path, monkeypatch):
    """The SQLite rehearsal used to bring the REAL database to the revision's
    down revision before its guard was in place, when env.py ignored
    sqlalchemy.url. Every GET must leave the database byte for byte as it was."""
    ini = make_env(tmp_path / "env", batch_revisions(), env_extra=ENV_OWN_URL)
    real = tmp_path / "real.db"
    url = sqlite_url(real)
    monkeypatch.setenv("OWN_URL", url)
    app, client = app_with(make_app, tmp_path, {"own": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "OWN_URL",
        "env": {"APP_DATABASE_URL": url}}})
    before = file_digest(real)

    sql = client.get("/targets/own/revisions/r001/sql", headers={"HX-Request": "true"})
    assert sql.status_code == 200
    assert "stopped before connecting; nothing was run" in text(sql)
    plan = client.get("/targets/own/plan?command=upgrade&revision=heads")
    assert plan.status_code == 422
    assert "in the rehearsal on a scratch copy" in text(plan)
    download = client.get("/targets/own/sql?from=&to=heads")
    assert download.status_code == 422
    for path in ("/", "/targets/own/card", "/targets/own", "/targets/own/history",
                 "/targets/own/revisions/r000", "/targets/own/revisions/r000/sql",
                 "/targets/own/revisions/r001", "/api/v1/targets",
                 "/api/v1/targets/own/history"):
        assert client.get(path).status_code == 200, path
    assert file_digest(real) == before
    assert version_table(url) == set()
    assert not sa.inspect(sa.create_engine(url)).has_table("t_r000")


def test_agent_is_not_shadowed_by_the_projects_own_modules(make_app, tmp_path, monkeypatch):
    """A project with top-level modules named like the dashboard's old helper
    neighbours (status, plan, history ...) imports its own, not ours."""
    project = tmp_path / "project"
    project.mkdir()
    for module in ("status", "plan", "history", "targets", "lint", "graph", "protocol",
                   "config", "offline", "rehearsal", "run", "locks"):
        (project / f"{module}.py").write_text(f"MARKER = 'project {module}'\n")
    check = ('import status as project_status, plan as project_plan\n'
             'assert project_status.MARKER == "project status", project_status.__file__\n'
             'assert project_plan.MARKER == "project plan", project_plan.__file__\n')
    ini = make_env(project / "migrations", linear(2), env_extra=check)
    url = sqlite_url(tmp_path / "p.db")
    monkeypatch.setenv("P_URL", url)
    # installed like a package (PYTHONPATH), not through prepend_sys_path
    app, client = app_with(make_app, tmp_path, {"p": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "P_URL", "cwd": str(project),
        "env": {"PYTHONPATH": str(project)}}})
    plan = client.get("/targets/p/plan?command=upgrade&revision=heads")
    assert plan.status_code == 200, text(plan)[-2000:]
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/p/jobs", json={"command": "upgrade",
                                                          "revision": "heads"}, headers=headers)
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded", (job["error"], job["log"])
    assert version_table(url) == {"r001"}


def test_agent_package_files_stay_small():
    """One module per kind of work, none over ~250 lines."""
    package = ROOT / "webapp" / "agent" / "alembic_dashboard_agent"
    sizes = {p.name: len(p.read_text().splitlines()) for p in package.glob("*.py")}
    assert {"protocol.py", "config.py", "offline.py", "rehearsal.py", "run.py",
            "autogen.py", "launch.py"} <= set(sizes)
    assert max(sizes.values()) <= 250, sizes
    # the agent directory holds nothing a project could import by mistake
    assert sorted(p.name for p in (ROOT / "webapp" / "agent").iterdir()
                  if p.name != "__pycache__") == ["__init__.py", "__main__.py",
                                                  "alembic_dashboard_agent"]


def test_missing_driver_stays_on_its_card(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(2))
    monkeypatch.setenv("ASYNC_URL", f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv("MYSQLDB_URL", "mysql://root@127.0.0.1:3306/test")
    monkeypatch.setenv("OK_URL", sqlite_url(tmp_path / "ok.db"))
    app, client = app_with(make_app, tmp_path, {
        "async": {"tier": "staging", "alembic_ini": str(ini), "url_env": "ASYNC_URL"},
        "mysqldb": {"tier": "staging", "alembic_ini": str(ini), "url_env": "MYSQLDB_URL"},
        "ok": {"tier": "staging", "alembic_ini": str(ini), "url_env": "OK_URL"}})
    listed = client.get("/api/v1/targets")
    assert listed.status_code == 200
    by_name = {t["name"]: t for t in listed.json}
    assert by_name["ok"]["reachable"] is True
    for name, module in (("async", "aiosqlite"), ("mysqldb", "MySQLdb")):
        assert by_name[name]["reachable"] is False
        assert "not installed" in by_name[name]["error"] and module in by_name[name]["error"]
        for path in (f"/targets/{name}", f"/targets/{name}/card", f"/targets/{name}/history"):
            response = client.get(path)
            assert response.status_code == 200, path
            assert "not installed" in text(response), path
    assert client.get("/").status_code == 200


UNIQUE_MODELS = '''
import sqlalchemy as sa
target_metadata = sa.MetaData()
sa.Table("t_r000", target_metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("name", sa.String(50)), sa.UniqueConstraint("name", name="uq_t_r000_name"))
'''


def test_sqlite_constraint_change_keeps_the_preview(make_app, tmp_path, monkeypatch):
    """SQLite cannot ALTER constraints outside a batch rebuild: the changes and
    the script are shown anyway, the SQL says what it could not render, and
    drift is "differences", not "unknown"."""
    ini = make_env(tmp_path / "env", linear(1), env_extra=UNIQUE_MODELS)
    url = sqlite_url(tmp_path / "c.db")
    monkeypatch.setenv("C_URL", url)
    app, client = app_with(make_app, tmp_path, {"c": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "C_URL"}})
    with app.app_context():
        from webapp.services.catalog import get_catalog
        run_command(get_catalog().get("c"), "upgrade", "head", url=url)
    page = client.get("/targets/c/preview/result", headers={"HX-Request": "true"})
    assert page.status_code == 200
    body = text(page)
    assert "add constraint uq_t_r000_name on t_r000" in body
    assert "create_unique_constraint" in body
    assert "cannot be rendered as offline SQL on sqlite" in body
    drift = client.get("/targets/c/drift", headers={"HX-Request": "true"})
    assert "unknown" not in text(drift) and "1" in text(drift), text(drift)


def test_package_resource_script_location(make_app, tmp_path, monkeypatch):
    """``script_location = package:path`` and package-form version_locations,
    resolved in the target's own Python like Alembic does."""
    project = tmp_path / "proj"
    package = project / "projpkg"
    make_env(package / "migrations", linear(2))
    (package / "__init__.py").write_text("")
    ini = project / "alembic.ini"
    ini.write_text((package / "migrations" / "alembic.ini").read_text()
                   .replace("script_location = %(here)s", "script_location = projpkg:migrations\n"
                            "version_locations = projpkg:migrations/versions")
                   .replace("path_separator = os", "path_separator = space"))
    url = sqlite_url(tmp_path / "pkg.db")
    monkeypatch.setenv("PKG_URL", url)
    app, client = app_with(make_app, tmp_path, {"pkg": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "PKG_URL", "cwd": str(project),
        "env": {"PYTHONPATH": str(project)}}})
    history = client.get("/api/v1/targets/pkg/history")
    assert history.status_code == 200, history.json
    assert [r["revision"] for r in history.json] == ["r001", "r000"]
    assert client.get("/targets/pkg/history").status_code == 200
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/pkg/jobs", json={"command": "upgrade",
                                                            "revision": "heads"}, headers=headers)
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded", (job["error"], job["log"])
    assert version_table(url) == {"r001"}


BREAK_ONLINE = '''
if not context.is_offline_mode() and os.environ.get("BREAK_ONLINE"):
    raise RuntimeError("settings file /etc/app/settings.cfg is missing")
'''


def test_env_py_failure_is_not_blamed_on_a_revision(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(2), env_extra=BREAK_ONLINE)
    url = sqlite_url(tmp_path / "e.db")
    monkeypatch.setenv("E_URL", url)
    app, client = app_with(make_app, tmp_path, {"e": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "E_URL",
        "env": {"BREAK_ONLINE": "1"}}})
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/e/jobs", json={"command": "upgrade",
                                                          "revision": "heads"}, headers=headers)
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "failed"
    assert job["failed_revision"] is None
    assert job["error"].startswith("env.py failed before any migration ran")
    assert "settings.cfg is missing" in job["error"]
    assert "r000" not in (job["report"] or "")
    page = client.get(f"/jobs/{job['id']}")
    assert "Revision r000 failed" not in text(page)


def test_batch_range_download_and_rehearsal_errors(make_app, tmp_path, monkeypatch):
    """The range download falls back to the rehearsal on SQLite batch
    operations; a revision failing in the rehearsal is reported as such."""
    revisions = batch_revisions() + [
        Rev("r002", "r001", upgrade='with op.batch_alter_table("t_r000") as batch: '
                                    'batch.drop_column("no_such_column")',
            downgrade="pass")]
    ini = make_env(tmp_path / "env", revisions)
    url = sqlite_url(tmp_path / "b.db")
    monkeypatch.setenv("B_URL", url)
    app, client = app_with(make_app, tmp_path, {"b": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "B_URL"}})
    download = client.get("/targets/b/sql?from=r000&to=r001")
    assert download.status_code == 200, text(download)[-1500:]
    sql = download.get_data(as_text=True)
    assert "CREATE TABLE _alembic_tmp_t_r000" in sql and "RENAME TO t_r000" in sql
    assert version_table(url) == set()
    plan = client.get("/targets/b/plan?command=upgrade&revision=heads")
    assert plan.status_code == 422
    assert "failed in the rehearsal on a scratch copy" in text(plan)
    assert "offline mode" not in text(plan)
    assert version_table(url) == set()


def test_job_on_a_missing_sqlite_file_is_refused(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(2))
    missing = tmp_path / "typo.db"
    monkeypatch.setenv("M_URL", f"sqlite:///{missing}")
    app, client = app_with(make_app, tmp_path, {"m": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "M_URL"}})
    headers = token_headers(app, "pipeline", "operator")
    posted = client.post("/api/v1/targets/m/jobs", json={"command": "upgrade",
                                                          "revision": "heads"}, headers=headers)
    assert posted.status_code == 409
    assert posted.json["error"] == "database_missing" and "does not exist" in \
        posted.json["detail"]
    plan = client.get("/targets/m/plan?command=upgrade&revision=heads")
    assert plan.status_code == 409 and "does not exist" in text(plan)
    assert not missing.exists()
    assert not Path(f"{missing}.dashboard-lock").exists()
    assert client.get("/api/v1/jobs/1", headers=headers).status_code == 404


def test_readme_api_example_works_on_the_demo_and_downloads_take_tokens(demo_app):
    readme = (ROOT / "README.md").read_text()
    # the first job example that starts from the target's state (not a recovery's *_of)
    example = json.loads(next(body for body in re.findall(r"-d '(\{\"command\"[^']*\})'",
                                                          readme) if '_of"' not in body))
    client = demo_app.test_client()
    headers = token_headers(demo_app, "pipeline", "operator")
    pending = client.get("/targets/demo-staging/pending.sql", headers=headers)
    assert pending.status_code == 200, pending.headers.get("Location")
    assert "attachment" in pending.headers["Content-Disposition"]
    assert "ALTER TABLE" in pending.get_data(as_text=True) or \
        "CREATE TABLE" in pending.get_data(as_text=True)
    ranged = client.get("/targets/demo-staging/sql?from=&to=heads", headers=headers)
    assert ranged.status_code == 200
    bad = client.get("/targets/demo-staging/pending.sql",
                     headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    posted = client.post("/api/v1/targets/demo-staging/jobs", json=example, headers=headers)
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded", job["log"]
    staging = next(t for t in client.get("/api/v1/targets", headers=headers).json
                   if t["name"] == "demo-staging")
    assert sorted(job["to"]) == sorted(staging["heads"]) and len(staging["heads"]) == 2
