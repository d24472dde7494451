"""The statement journal (issue 21, item 2): on DDL that is not transactional
the job records each statement of a revision before and after it runs; after
a failure the job page shows which ran, cross-checked with the live schema."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

from webapp.extensions import db
from webapp.models import Job, JobStatement

# ten statements: 4 run, the 5th fails (a table that does not exist)
HALF = ('op.create_table("a", sa.Column("id", sa.Integer, primary_key=True)); '
        'op.add_column("a", sa.Column("note", sa.String(20), server_default="x\'y")); '
        'op.create_index("ix_a_note", "a", ["note"]); '
        'op.create_table("b", sa.Column("id", sa.Integer, primary_key=True)); '
        'op.execute("INSERT INTO no_such_table VALUES (\'secret-literal\')"); '
        'op.create_table("c", sa.Column("id", sa.Integer, primary_key=True))')


def failed_half_way(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("SHOP_URL", url)
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000", upgrade=HALF)])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL"}}))
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "failed"
    return app, job, url


def test_failed_revision_journal_and_page(make_app, tmp_path, monkeypatch):
    app, job, url = failed_half_way(make_app, tmp_path, monkeypatch)
    assert "[dashboard] journal" not in job["log"]  # kept in job_statements, not in the visible log
    with app.app_context():
        rows = list(db.session.scalars(db.select(JobStatement).where(
            JobStatement.job_id == job["id"]).order_by(JobStatement.revision,
                                                       JobStatement.position)))
    # r000's one statement, then r001's five that started
    assert [(r.revision, r.position, r.finished_at is not None) for r in rows] == [
        ("r000", 1, True), ("r001", 1, True), ("r001", 2, True), ("r001", 3, True),
        ("r001", 4, True), ("r001", 5, False)]
    assert [(r.object_kind, r.object_table, r.object_name) for r in rows[1:5]] == [
        ("table", "a", "a"), ("column", "a", "note"), ("index", "a", "ix_a_note"),
        ("table", "b", "b")]
    assert "secret-literal" not in rows[5].sql and "no_such_table" in rows[5].sql
    assert all(len(r.sha256) == 64 and r.started_at for r in rows)
    add_user(app, "root", "admin")
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/jobs/{job['id']}").get_data(as_text=True)
    panel = re.search(r'<div class="journal" id="job-journal".*?</section>', page, re.S).group(0)
    assert 'data-agrees="true"' in panel, panel
    assert "Statements 1–4 ran." in panel and "Statement 5 failed" in panel
    assert panel.count('class="statement-finished"') == 4
    assert panel.count('class="statement-running"') == 1
    assert panel.count('class="statement-not_run"') == 1  # create table c, from the file
    resume = re.search(r'<pre id="journal-resume">(.*?)</pre>', panel, re.S).group(1)
    assert "no_such_table" in resume and "CREATE TABLE c" in resume
    assert "CREATE TABLE a" not in resume and 'id="journal-stamp"' in panel
    operator = app.test_client()
    login(operator, "olga")
    page = operator.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'id="journal-resume"' in page and 'id="journal-stamp"' not in page
    assert "have an admin stamp r001" in page
    compensate = re.search(r'<pre id="journal-compensate">(.*?)</pre>', panel, re.S).group(1)
    assert [line.strip() for line in compensate.strip().splitlines()] == [
        "DROP TABLE b;", "DROP INDEX ix_a_note;", "ALTER TABLE a DROP COLUMN note;",
        "DROP TABLE a;"]


def test_journal_and_schema_disagree(make_app, tmp_path, monkeypatch):
    """A table the journal says was created is dropped behind the dashboard's
    back: the page says they disagree, shows both, and offers nothing."""
    import sqlite3

    app, job, url = failed_half_way(make_app, tmp_path, monkeypatch)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("DROP TABLE b")
    add_user(app, "root", "admin")
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'id="journal-disagrees"' in page and 'data-agrees="false"' in page
    assert "disagrees</strong>" in page
    assert 'id="plan-resume"' not in page and 'id="journal-compensate"' not in page
    assert 'id="journal-resume"' not in page
    assert 'data-recommended="inspect_and_stamp"' in page  # compare by hand first


def test_edited_revision_file_offers_nothing(make_app, tmp_path, monkeypatch):
    """The failing revision's file is edited after the job: its statement at
    a journalled position is no longer what ran, so nothing is offered."""
    app, job, url = failed_half_way(make_app, tmp_path, monkeypatch)
    path = tmp_path / "env" / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace('"note", sa.String(20)', '"note", sa.String(30)'))
    add_user(app, "root", "admin")
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert 'id="journal-changed"' in page
    assert 'id="plan-resume"' not in page and 'id="journal-compensate"' not in page
    assert 'data-recommended="inspect_and_stamp"' in page


SLOW_MIDDLE = ('op.create_table("a", sa.Column("id", sa.Integer, primary_key=True)); '
               'op.create_table("b", sa.Column("id", sa.Integer, primary_key=True)); '
               'import time; time.sleep(0 if op.get_context().as_sql else 60); '
               'op.create_table("c", sa.Column("id", sa.Integer, primary_key=True))')


@pytest.mark.job_process
def test_killed_migration_journal_on_the_job_page(make_app, tmp_path, monkeypatch):
    """The job's migration process is SIGKILLed after two statements of r001:
    the job process keeps the journal, the abandoned job's page shows 1-2 ran
    and 3 did not, in agreement with the live schema, and compensation."""
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("SHOP_URL", url)
    ini = make_env(tmp_path / "env", [Rev("r000", None),
                                      Rev("r001", "r000", upgrade=SLOW_MIDDLE)])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL"}}))
    headers = token_headers(app, "root", "admin")
    client = app.test_client()
    job_id = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"}).json["job"]
    deadline = time.monotonic() + 30
    with app.app_context():
        while time.monotonic() < deadline:
            done = db.session.scalar(db.select(db.func.count()).select_from(JobStatement).where(
                JobStatement.job_id == job_id, JobStatement.revision == "r001",
                JobStatement.finished_at.is_not(None)))
            db.session.rollback()
            if done == 2:
                break
            time.sleep(0.2)
        assert done == 2
        pid = db.session.get(Job, job_id).worker_pid
    children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    os.kill(int(children[0]), signal.SIGKILL)
    job = wait_job(client, job_id, headers, timeout=30)
    assert job["status"] == "abandoned"
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/jobs/{job_id}").get_data(as_text=True)
    panel = re.search(r'<div class="journal" id="job-journal".*?</section>', page, re.S).group(0)
    assert 'data-agrees="true"' in panel and "Statements 1–2 ran." in panel, panel
    assert panel.count('class="statement-not_run"') == 1
    compensate = re.search(r'<pre id="journal-compensate">(.*?)</pre>', panel, re.S).group(1)
    assert compensate.split() == ["DROP", "TABLE", "b;", "DROP", "TABLE", "a;"]
    assert "CREATE TABLE c" in re.search(r'<pre id="journal-resume">(.*?)</pre>', panel,
                                         re.S).group(1)


def test_failed_revision_on_mariadb(make_app, tmp_path, monkeypatch, mysql_url):
    """The same half-applied revision on MariaDB: the statements listed from
    the file (offline) hash as the run's did, and the schema agrees."""
    monkeypatch.setenv("SHOP_URL", mysql_url)
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000", upgrade=HALF)])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL"}}))
    headers = token_headers(app, "root", "admin")
    client = app.test_client()
    job = wait_job(client, client.post("/api/v1/targets/shop/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head"}).json["job"], headers)
    assert job["status"] == "failed"
    admin = app.test_client()
    login(admin, "root")
    page = admin.get(f"/jobs/{job['id']}").get_data(as_text=True)
    panel = re.search(r'<div class="journal" id="job-journal".*?</section>', page, re.S).group(0)
    assert 'data-agrees="true"' in panel and "Statements 1–4 ran." in panel, panel
    assert panel.count('class="statement-not_run"') == 1
    compensate = re.search(r'<pre id="journal-compensate">(.*?)</pre>', panel, re.S).group(1)
    assert "DROP INDEX ix_a_note ON a" in compensate, compensate
