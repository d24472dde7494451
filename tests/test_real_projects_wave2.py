"""Real projects, second wave (issue 22): a target's ``python`` is resolved
like every other path and checked at start, a job whose interpreter is gone
says why, and a Flask-Migrate target's configuration panel names its app."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from support.common import add_user, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

from webapp.core.targets import TargetsFileError, load_targets


def python_wrapper(path: Path) -> Path:
    """An executable script at ``path`` that runs the dashboard's own
    interpreter (a stand-in for a project's ``venv/bin/python``; a symlink
    would lose the venv once Python resolves it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    path.chmod(0o755)
    return path


def shop_target(tmp_path: Path, **extra) -> tuple[Path, dict]:
    """A plain Alembic environment in ``tmp_path/project`` and its target spec."""
    ini = make_env(tmp_path / "project", linear(2))
    return ini, {"tier": "staging", "alembic_ini": str(ini), "url_env": "WAVE2_URL", **extra}


def test_relative_python_is_resolved_against_the_targets_file(make_app, tmp_path,
                                                              monkeypatch):
    conf = tmp_path / "conf"
    python = python_wrapper(conf / "venv" / "bin" / "python")
    ini, spec = shop_target(tmp_path, python="venv/bin/python", cwd=str(tmp_path / "project"))
    monkeypatch.setenv("WAVE2_URL", sqlite_url(tmp_path / "shop.db"))
    targets = write_targets_file(conf / "targets.toml", {"shop": spec})
    # not resolved further: a venv's bin/python is a symlink that must stay one
    assert load_targets(targets)["shop"].python == str(python)
    app = make_app(targets)
    headers = token_headers(app, "vic", "viewer")
    listed = app.test_client().get("/api/v1/targets", headers=headers).json
    assert listed[0]["reachable"] is True, listed
    assert listed[0]["current"] == []


def test_a_bare_python_name_is_looked_up_on_path(tmp_path):
    _, spec = shop_target(tmp_path, python="python3")
    target = load_targets(write_targets_file(tmp_path / "targets.toml",
                                             {"shop": spec}))["shop"]
    assert target.python == shutil.which("python3")


@pytest.mark.parametrize("python, problem", [
    ("venv/bin/python", "interpreter not found: {tmp}/venv/bin/python"),
    ("./not-executable", "interpreter is not executable: {tmp}/not-executable"),
    ("no-such-python-wave2", "interpreter not found on PATH: no-such-python-wave2"),
])
def test_a_missing_python_is_refused_at_start(tmp_path, python, problem):
    (tmp_path / "not-executable").write_text("#!/bin/sh\n", encoding="utf-8")
    _, spec = shop_target(tmp_path, python=python)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": spec})
    with pytest.raises(TargetsFileError) as caught:
        load_targets(targets)
    error = caught.value
    assert error.key == "targets.shop.python"
    line = targets.read_text(encoding="utf-8").splitlines()[error.line - 1]
    assert line.startswith("python")
    assert str(error) == (f"targets file {targets}, line {error.line}, key targets.shop.python: "
                          + problem.format(tmp=tmp_path))
    assert "\n" not in str(error)


def test_a_job_whose_interpreter_is_gone_fails_and_says_why(make_app, tmp_path, monkeypatch):
    python = python_wrapper(tmp_path / "venv" / "bin" / "python")
    _, spec = shop_target(tmp_path, python=str(python))
    monkeypatch.setenv("WAVE2_URL", sqlite_url(tmp_path / "shop.db"))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": spec}))
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    python.unlink()  # removed after the dashboard started
    for _ in range(2):  # the first job freed the target: the second starts too
        response = client.post("/api/v1/targets/shop/jobs", headers=headers,
                               json={"command": "upgrade", "revision": "head"})
        assert response.status_code == 202, response.json
        job = wait_job(client, response.json["job"], headers)
        assert job["status"] == "failed", job
        assert job["error"] == (f"cannot start the target's interpreter {python}: "
                                "No such file or directory")
        assert job["error"] in job["log"]
    add_user(app, "vic", "viewer")
    login(client, "vic")
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert f"cannot start the target&#39;s interpreter {python}" in page
    assert "killed or crashed" not in page


def test_flask_migrate_configuration_panel_names_the_app(make_app, tmp_path):
    project = tmp_path / "app"
    (project / "migrations").mkdir(parents=True)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": "shopapp:create_app", "cwd": str(project)}}))
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    html = client.get("/targets/shopapp").get_data(as_text=True)
    panel = re.search(r'<section class="panel config">(.*?)</section>', html, re.S).group(1)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", panel))
    assert "$None" not in text and "[alembic]" not in text and "alembic.ini" not in text
    assert "Flask app shopapp:create_app" in text
    assert f"Migrations directory {project / 'migrations'}" in text
    assert "URL from the app's own configuration" in text
