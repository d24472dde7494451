"""After a failed job the page says what to do next (issue 20, item 7):
what stayed applied, which revision failed, the plan again (with its
rehearsal), and for an admin a stamp of the failed revision."""

from __future__ import annotations

import re

from support.common import add_user, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

FAILS = 'raise RuntimeError("disk full (simulated)")'


def failed_job(make_app, tmp_path, monkeypatch, url: str | None = None,
               revisions: list[Rev] | None = None) -> tuple:
    """An app whose target ``shop`` (``url``, default a new SQLite file) ran
    ``upgrade head`` over ``revisions`` (default: r001 raises) and failed:
    (app, the job's JSON, an operator's token headers)."""
    monkeypatch.setenv("SHOP_URL", url or sqlite_url(tmp_path / "shop.db"))
    ini = make_env(tmp_path / "env", revisions or [Rev("r000", None),
                                                   Rev("r001", "r000", upgrade=FAILS)])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL"}}))
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/targets/shop/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head"})
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "failed" and job["failed_revision"] == "r001", job
    return app, job, headers


def recovery_panel(client, job_id: int) -> str:
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    found = re.search(r'<section class="recovery" id="job-recovery".*?</section>', page, re.S)
    assert found, page
    return found.group(0)


def test_a_failed_job_says_what_stayed_applied_and_what_to_do(make_app, tmp_path,
                                                              monkeypatch):
    app, job, _ = failed_job(make_app, tmp_path, monkeypatch)
    job_id = job["id"]
    add_user(app, "root", "admin")
    operator = app.test_client()
    login(operator, "olga")
    panel = recovery_panel(operator, job_id)
    assert "still in the database: <strong>r000</strong>" in panel
    assert "The revision that failed: <code>r001</code>" in panel
    assert re.search(r'id="recover-plan" href="/targets/shop/plan\?command=upgrade&amp;'
                     r'revision=head"', panel), panel
    assert 'id="recover-stamp"' not in panel  # stamping is an admin's
    # no journal row for r001 on SQLite: what stayed of it is not known, so the
    # schema is compared first; running it again is the alternative
    assert 'data-recommended="inspect_and_stamp"' in panel
    assert "SQLite cannot roll DDL back" in panel and "it may be partly applied" in panel
    assert re.findall(r'<li data-step="(\w+)"', panel) == ["fix_and_rerun"]
    admin = app.test_client()
    login(admin, "root")
    panel = recovery_panel(admin, job_id)
    assert re.search(r'id="recover-stamp" href="/targets/shop/plan\?command=stamp&amp;'
                     r'revision=r001"', panel), panel
    # the links lead to plans (GET, nothing runs)
    plan = admin.get("/targets/shop/plan?command=upgrade&revision=head")
    assert plan.status_code == 200 and "r001" in plan.get_data(as_text=True)


def test_a_succeeded_job_has_no_recovery_panel(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "ok.db")
    monkeypatch.setenv("OK_URL", url)
    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"ok": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "OK_URL"}}))
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    job = client.post("/api/v1/targets/ok/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "head"}).json["job"]
    assert wait_job(client, job, headers)["status"] == "succeeded"
    login(client, "olga")
    assert 'id="job-recovery"' not in client.get(f"/jobs/{job}").get_data(as_text=True)


# two statements run, the third fails: a half-applied revision where DDL is not
# transactional, a rolled-back one on PostgreSQL
TWO_THEN_FAIL = ('op.create_table("paid", sa.Column("id", sa.Integer, primary_key=True)); '
                 'op.add_column("paid", sa.Column("note", sa.String(20))); '
                 'op.execute("INSERT INTO no_such_table VALUES (1)")')
EXPECTED = {  # dialect -> (state sentence, recommended step, alternatives)
    "sqlite": ("partly applied, as the statement journal below shows", "resume",
               ["compensate", "resume_by_hand"]),
    "mysql": ("partly applied, as the statement journal below shows", "resume",
              ["compensate", "resume_by_hand"]),
    "postgresql": ("PostgreSQL runs DDL in a transaction, so it was rolled back and nothing "
                   "of it stayed",
                   "fix_and_rerun", []),
}


def test_guided_recovery_for_every_dialect(make_app, tmp_path, monkeypatch, any_db_url):
    """A revision fails at its third statement on each dialect: the page says
    what is applied and what is not, one recommended step and the
    alternatives, as the dialect's DDL allows; the job JSON says the same."""
    import sqlalchemy as sa

    dialect = sa.engine.make_url(any_db_url).get_backend_name()
    app, job, headers = failed_job(make_app, tmp_path, monkeypatch, any_db_url, [
        Rev("r000", None), Rev("r001", "r000", upgrade=TWO_THEN_FAIL), Rev("r002", "r001")])
    client = app.test_client()
    state, recommended, alternatives = EXPECTED[dialect]
    login(client, "olga")
    panel = recovery_panel(client, job["id"])
    assert f'data-recommended="{recommended}"' in panel, panel
    assert re.findall(r'<li data-step="(\w+)"', panel) == alternatives
    assert state in panel, panel
    assert "Not applied: r001 r002." in panel
    table = sa.inspect(sa.create_engine(any_db_url)).has_table("paid")
    assert table is (dialect != "postgresql")  # what the page says is what the database has
    if recommended == "resume":
        assert 'id="plan-resume"' in panel and 'id="recover-plan"' not in panel
    else:
        assert 'id="recover-plan"' in panel and 'id="plan-resume"' not in panel
    found = client.get(f"/api/v1/jobs/{job['id']}", headers=headers).json["recovery"]
    assert job["applied"] == ["r000"]  # each revision commits by itself in these envs
    assert found == {"applied": ["r000"], "not_applied": ["r001", "r002"],
                     "failed_revision": "r001",
                     "failed_state": "rolled_back" if dialect == "postgresql" else
                     "partly_applied", "recommended": recommended,
                     "alternatives": alternatives}
