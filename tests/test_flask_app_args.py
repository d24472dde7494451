"""``flask_app`` may call the app factory with literal arguments, as
``flask --app 'pkg:create_app(cli=True)'`` does (issue 22, item 9)."""

from __future__ import annotations

import textwrap

import pytest
from support.envtools import sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.targetenv import shopapp_project, target_venv

from webapp.core.targets import TargetsFileError, load_targets

# A factory that cannot be called without its arguments (like a Flask-Migrate
# tool's create_app(read_only=...)): it wraps the shopapp fixture's factory.
FACTORY = textwrap.dedent('''\
    import os

    import shopapp


    def make_app(url, *, cli=False, tags=()):
        if not cli or tags != ("a", 1):
            raise RuntimeError(f"called without its arguments: cli={cli!r} tags={tags!r}")
        os.environ["SHOPAPP_DATABASE_URL"] = url
        return shopapp.create_app()
    ''')


def test_a_factory_called_with_literal_arguments(make_app, tmp_path):
    url = sqlite_url(tmp_path / "args.db")
    project = shopapp_project(tmp_path)
    (project / "shop_factory.py").write_text(FACTORY, encoding="utf-8")
    targets = write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": f"shop_factory:make_app({url!r}, cli=True, "
                                        "tags=('a', 1))",
        "cwd": str(project), "python": str(target_venv()),
        "env": {"PYTHONPATH": str(project)}}})
    app = make_app(targets)
    headers = token_headers(app, "op", "operator")
    client = app.test_client()
    status = client.get("/api/v1/targets", headers=headers).json[0]
    assert status["reachable"], status
    job = client.post("/api/v1/targets/shopapp/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json
    assert "job" in job, job
    done = wait_job(client, job["job"], headers)
    assert done["status"] == "succeeded", done["log"]
    assert version_table(url) == set(done["to"]) and done["to"]


@pytest.mark.parametrize("spec, problem", [
    ("shopapp:create_app(", "cannot be parsed"),
    ("shopapp:create_app(os.environ['X'])", "literal"),
    ("shopapp:factories.create_app()", "simple name"),
    ("shopapp:create_app(**{'a': 1})", "literal"),
    (":create_app", "module"),
])
def test_a_bad_flask_app_is_refused_at_start(tmp_path, spec, problem):
    targets = write_targets_file(tmp_path / "targets.toml", {"shopapp": {
        "tier": "staging", "flask_app": spec, "cwd": str(tmp_path)}})
    with pytest.raises(TargetsFileError) as caught:
        load_targets(targets)
    error = caught.value
    assert error.key == "targets.shopapp.flask_app"
    line = targets.read_text(encoding="utf-8").splitlines()[error.line - 1]
    assert line.startswith("flask_app")
    assert problem in str(error) and "\n" not in str(error)
    assert str(error).startswith(f"targets file {targets}, line {error.line}, key "
                                 "targets.shopapp.flask_app: ")
