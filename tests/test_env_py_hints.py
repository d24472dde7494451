"""A target whose script directory has no env.py is told so, with the path
Alembic looked for, instead of the hint for an env.py that cannot import the
target's code (issue 22, item 5); a real ImportError inside env.py keeps that
hint."""

from __future__ import annotations

import html
import re

from support.common import add_user, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers
from support.targetenv import shopapp_project, target_venv

from webapp.core.runner import run_command

IMPORT_HINT = "could not import the target's code"


def plain(response) -> str:
    """The visible text of a page or fragment (tags dropped, entities decoded)."""
    text = re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))
    return re.sub(r"\s+", " ", html.unescape(text))


def _client(make_app, tmp_path, spec: dict):
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"t": spec}))
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    return app, client


def test_alembic_ini_target_without_env_py(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(2))
    url = sqlite_url(tmp_path / "t.db")
    monkeypatch.setenv("ENV_PY_URL", url)
    app, client = _client(make_app, tmp_path, {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "ENV_PY_URL"})
    target = app.extensions["alembic_dashboard"].get("t")
    run_command(target, "upgrade", "head", url=url)  # at head: drift runs env.py
    env_py = tmp_path / "env" / "env.py"
    env_py.unlink()
    missing = f"env.py is missing: no file {env_py}"

    sql = plain(client.get("/targets/t/revisions/r001/sql", headers={"HX-Request": "true"}))
    assert missing in sql and "Hint:" in sql and "script directory" in sql
    assert IMPORT_HINT not in sql
    preview = plain(client.get("/targets/t/preview/result"))
    assert missing in preview and IMPORT_HINT not in preview

    badge = client.get("/targets/t/drift").get_data(as_text=True)
    assert "drift-unknown" in badge
    assert missing in plain(client.get("/targets/t/drift"))  # visible, not only the title
    assert client.get("/targets/t/card").status_code == 200

    api = client.post("/api/v1/targets/t/jobs", headers=token_headers(app, "op", "operator"),
                      json={"command": "downgrade", "revision": "-1"})
    assert api.status_code == 422, api.json
    assert api.json["error"] == "plan_failed" and missing in api.json["detail"]


def test_flask_migrate_target_without_env_py(make_app, tmp_path):
    url = sqlite_url(tmp_path / "shopapp.db")
    project = shopapp_project(tmp_path)
    env_py = project / "migrations" / "env.py"
    env_py.unlink()
    app, client = _client(make_app, tmp_path, {
        "tier": "staging", "flask_app": "shopapp:create_app", "cwd": str(project),
        "python": str(target_venv()), "env": {"SHOPAPP_DATABASE_URL": url}})
    missing = f"env.py is missing: no file {env_py}"
    history = client.get("/api/v1/targets/t/history").json
    first = history[-1]["revision"]  # the base: reading the history needs no env.py

    sql = plain(client.get(f"/targets/t/revisions/{first}/sql",
                           headers={"HX-Request": "true"}))
    assert missing in sql and "Hint:" in sql and "flask db init" in sql
    assert IMPORT_HINT not in sql

    api = client.post("/api/v1/targets/t/jobs", headers=token_headers(app, "op", "operator"),
                      json={"command": "upgrade", "revision": "+1"})
    assert api.status_code == 422, api.json
    assert api.json["error"] == "plan_failed" and missing in api.json["detail"]


def test_env_py_that_imports_a_missing_module_keeps_the_import_hint(make_app, tmp_path,
                                                                    monkeypatch):
    ini = make_env(tmp_path / "env", linear(2), env_extra="import not_installed_app  # noqa")
    monkeypatch.setenv("ENV_PY_URL", sqlite_url(tmp_path / "t.db"))
    app, client = _client(make_app, tmp_path, {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "ENV_PY_URL"})
    sql = plain(client.get("/targets/t/revisions/r001/sql", headers={"HX-Request": "true"}))
    assert "ModuleNotFoundError" in sql and "not_installed_app" in sql
    assert IMPORT_HINT in sql and "sys.path" in sql
    assert "env.py is missing" not in sql
