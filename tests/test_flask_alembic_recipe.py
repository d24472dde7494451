"""The README's Flask-Alembic recipe (issue 22, item 5) works as written: a
project laid out like Flask-Alembic's (revisions and script.py.mako in
``<app root>/migrations/``, no alembic.ini, no env.py) plus the README's
``alembic.ini``, ``env.py`` and targets-file blocks, copied from the README
itself, gives the history, an upgrade job and an autogenerate preview from
the app's models."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from support.common import ROOT, add_user, login
from support.envtools import sqlite_url
from support.jobtools import token_headers, version_table, wait_job

BLOG_APP = '''\
import os

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class Post(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(200), nullable=False)
    body = db.Column(db.Text)  # in the models, not yet in a revision


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("BLOG_APP_DB", "sqlite://")
    db.init_app(app)
    return app
'''

REVISION = '''\
"""{message}

Revision ID: {rev}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down_literal}
branch_labels = None
depends_on = None


def upgrade():
    {upgrade}


def downgrade():
    {downgrade}
'''


def _readme_blocks() -> dict[str, str]:
    """The ini, python and toml blocks of the README's Flask-Alembic recipe."""
    text = (ROOT / "README.md").read_text()
    start = text.index("**Flask-Alembic**")
    section = text[start:text.index("\nRevisions without `downgrade()`", start)]
    blocks = dict(re.findall(r"```(ini|python|toml)\n(.*?)```", section, re.S))
    assert set(blocks) == {"ini", "python", "toml"}, blocks.keys()
    return blocks


def _project(tmp_path: Path) -> tuple[Path, str]:
    """A Flask-Alembic-style project under tmp_path/srv/blog and the
    targets file written from the README (paths moved under tmp_path)."""
    srv = tmp_path / "srv"
    package = srv / "blog" / "blog"
    migrations = package / "migrations"
    migrations.mkdir(parents=True)
    (package / "__init__.py").write_text(BLOG_APP)
    import alembic

    generic = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    (migrations / "script.py.mako").write_text(generic.read_text())
    (migrations / "1700000000_create_post.py").write_text(REVISION.format(
        message="create post", rev="1700000000", down="", down_literal="None",
        upgrade='op.create_table("post", sa.Column("id", sa.Integer, primary_key=True))',
        downgrade='op.drop_table("post")'))
    (migrations / "1700000100_add_title.py").write_text(REVISION.format(
        message="add title", rev="1700000100", down="1700000000", down_literal='"1700000000"',
        upgrade='op.add_column("post", sa.Column("title", sa.String(200), nullable=False))',
        downgrade='op.drop_column("post", "title")'))
    blocks = _readme_blocks()
    env_dir = srv / "blog" / "dashboard-alembic"
    env_dir.mkdir()
    (env_dir / "alembic.ini").write_text(blocks["ini"])
    (env_dir / "env.py").write_text(blocks["python"])
    (env_dir / "script.py.mako").write_text(generic.read_text())
    toml = blocks["toml"].replace("/srv/blog/.venv/bin/python", sys.executable)
    return srv, toml.replace("/srv/", f"{srv}/")


def test_the_flask_alembic_recipe_as_written(make_app, tmp_path, monkeypatch):
    srv, toml = _project(tmp_path)
    url = sqlite_url(tmp_path / "blog.db")
    monkeypatch.setenv("BLOG_STAGING_DATABASE_URL", url)
    targets = tmp_path / "targets.toml"
    targets.write_text(toml)
    app = make_app(targets)
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()

    history = client.get("/api/v1/targets/blog-staging/history", headers=headers)
    assert history.status_code == 200, history.json
    assert [r["revision"] for r in history.json] == ["1700000100", "1700000000"]

    posted = client.post("/api/v1/targets/blog-staging/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "heads"})
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded", job["log"]
    assert version_table(url) == {"1700000100"}

    # env.py gives the app's models: the preview sees the column no revision adds
    add_user(app, "olga", "operator")
    ui = app.test_client()
    login(ui, "olga")
    preview = ui.get("/targets/blog-staging/preview/result", headers={"HX-Request": "true"})
    assert preview.status_code == 200
    assert "add column post.body" in preview.get_data(as_text=True)
    assert (srv / "blog" / "blog" / "migrations").is_dir()
