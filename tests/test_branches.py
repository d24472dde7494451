"""Labelled branches (issue 22, item 3): expand/contract.

Every revision names the branch(es) it is on (Alembic's inherited
``branch_labels``, as ``alembic show`` prints them), the status says where the
database stands on each branch, and ``upgrade <label>@head`` can be planned
and run. Real Alembic environment on SQLite, real jobs.
"""

from __future__ import annotations

import html as html_lib
import re

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.rollouttools import wait_rollout

EXPAND = ["e1", "e2", "e3"]
CONTRACT = ["c1", "c2", "c3"]


def expand_contract() -> list[Rev]:
    """Two labelled bases: expand e1 <- e2 <- e3 and contract c1 <- c2 <- c3,
    where c2 depends on e2 (contract runs only after its expand step)."""
    return [
        Rev("e1", None, "expand: add columns", branch_labels=("expand",),
            create_date="2026-01-01 00:00:01"),
        Rev("e2", "e1", "expand: backfill", create_date="2026-01-01 00:00:02"),
        Rev("e3", "e2", "expand: new index", create_date="2026-01-01 00:00:03"),
        Rev("c1", None, "contract: drop triggers", branch_labels=("contract",),
            create_date="2026-01-01 00:00:04"),
        Rev("c2", "c1", "contract: drop old columns", depends_on="e2",
            create_date="2026-01-01 00:00:05"),
        Rev("c3", "c2", "contract: drop old table", create_date="2026-01-01 00:00:06"),
    ]


@pytest.fixture
def branches_env(make_app, tmp_path, monkeypatch):
    """(app, ini path, database URL) of a target ``ec`` with expand/contract branches."""
    ini = make_env(tmp_path / "project", expand_contract())
    url = sqlite_url(tmp_path / "ec.db")
    monkeypatch.setenv("EC_URL", url)
    targets = write_targets_file(tmp_path / "targets.toml", {"ec": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "EC_URL"}})
    return make_app(targets), ini, url


def alembic_branches(ini) -> dict[str, set[str]]:
    """What ``alembic show`` says as "Branch names" for each revision."""
    script = ScriptDirectory.from_config(Config(str(ini)))
    return {rev.revision: set(rev.branch_labels) for rev in script.walk_revisions()}


def run_job(client, headers, revision: str) -> dict:
    posted = client.post("/api/v1/targets/ec/jobs", headers=headers,
                         json={"command": "upgrade", "revision": revision})
    assert posted.status_code == 202, posted.json
    job = wait_job(client, posted.json["job"], headers)
    assert job["status"] == "succeeded", job
    return job


def by_label(listed: list[dict]) -> dict[str, dict]:
    return {b["label"]: b for b in listed[0]["branches"]}


def test_api_history_names_the_branches_of_every_revision(branches_env):
    app, ini, _ = branches_env
    headers = token_headers(app, "vic", "viewer")
    history = app.test_client().get("/api/v1/targets/ec/history", headers=headers).json
    got = {entry["revision"]: entry for entry in history}
    assert set(got) == set(EXPAND + CONTRACT)
    for rev in EXPAND:
        assert got[rev]["branches"] == ["expand"], got[rev]
    for rev in CONTRACT:
        assert got[rev]["branches"] == ["contract"], got[rev]
    # the same as Alembic itself (alembic show's "Branch names")
    assert {r: set(e["branches"]) for r, e in got.items()} == alembic_branches(ini)
    # the existing fields keep what the file declares
    assert got["e1"]["branch_labels"] == ["expand"] and got["e2"]["branch_labels"] == []
    assert got["c2"]["depends_on"] == ["e2"] and got["c3"]["depends_on"] == []


def test_revision_page_names_its_branch(branches_env):
    app, _, _ = branches_env
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    for rev, branch in (("e2", "expand"), ("c3", "contract"), ("e1", "expand")):
        page = client.get(f"/targets/ec/revisions/{rev}").get_data(as_text=True)
        found = re.search(r'<dt>On branch</dt><dd class="branches">(.*?)</dd>', page, re.S)
        assert found, page
        assert re.sub(r"<[^>]+>", "", found.group(1)).strip() == branch


def test_status_per_branch_and_an_expand_head_job_upgrades_only_expand(branches_env):
    app, _, url = branches_env
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    branches = by_label(client.get("/api/v1/targets", headers=headers).json)
    assert branches == {
        "contract": {"label": "contract", "head": "c3", "heads": ["c3"], "current": [],
                     "pending": 5},  # c1..c3 and the expand revisions c2 depends on
        "expand": {"label": "expand", "head": "e3", "heads": ["e3"], "current": [],
                   "pending": 3},
    }

    job = run_job(client, headers, "expand@head")
    assert job["revision"] == "expand@head"
    assert version_table(url) == {"e3"}  # contract untouched
    listed = client.get("/api/v1/targets", headers=headers).json
    assert listed[0]["pending"] == 3
    branches = by_label(listed)
    assert branches["expand"]["current"] == ["e3"] and branches["expand"]["pending"] == 0
    assert branches["contract"]["current"] == [] and branches["contract"]["pending"] == 3

    run_job(client, headers, "c2")
    branches = by_label(client.get("/api/v1/targets", headers=headers).json)
    assert branches["contract"]["current"] == ["c2"] and branches["contract"]["pending"] == 1
    assert branches["expand"]["current"] == ["e3"] and branches["expand"]["pending"] == 0


def test_target_page_shows_branches_and_plans_label_head(branches_env):
    app, _, url = branches_env
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    run_job(client, headers, "e1")
    ui = app.test_client()
    login(ui, "olga")
    page = ui.get("/targets/ec").get_data(as_text=True)
    rows = dict(re.findall(r'<tr class="branch" data-branch="(\w+)">(.*?)</tr>', page, re.S))
    assert set(rows) == {"expand", "contract"}

    def text(cell: str, row: str) -> str:
        found = re.search(rf'class="branch-{cell}">(.*?)</td>', rows[row], re.S)
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()

    assert text("current", "expand") == "e1"
    assert text("pending", "expand") == "2 e2 , e3"
    assert text("current", "contract") == "none applied"
    # plan choices: one per branch with something pending, and in the revision list
    links = re.findall(r'<a class="button branch-upgrade"[^>]*href="([^"]+)"', page)
    assert sorted(html_lib.unescape(h) for h in links) == [
        "/targets/ec/plan?command=upgrade&revision=contract@head",
        "/targets/ec/plan?command=upgrade&revision=expand@head"]
    assert '<option value="expand@head">expand@head</option>' in page

    plan = ui.get("/targets/ec/plan?command=upgrade&revision=expand%40head")
    assert plan.status_code == 200, plan.get_data(as_text=True)[:2000]
    plan_html = plan.get_data(as_text=True)
    steps = re.findall(r"Running upgrade (\w+) -&gt; (\w+)", plan_html)
    assert steps == [("e1", "e2"), ("e2", "e3")], steps
    plan_hash = re.search(r'name="plan_hash" value="([0-9a-f]+)"', plan_html).group(1)
    posted = ui.post("/targets/ec/jobs", data={
        "csrf_token": csrf_from(plan_html), "command": "upgrade", "revision": "expand@head",
        "plan_hash": plan_hash})
    assert posted.status_code == 303, posted.get_data(as_text=True)[:2000]
    job_id = int(posted.headers["Location"].rsplit("/", 1)[1])
    assert wait_job(client, job_id, headers)["status"] == "succeeded"
    assert version_table(url) == {"e3"}
    after = ui.get("/targets/ec").get_data(as_text=True)
    assert 'data-branch="expand" data-busy' not in after  # nothing pending on expand
    assert 'data-branch="contract" data-busy' in after


def test_unknown_branch_label_is_refused(branches_env):
    app, _, url = branches_env
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    unknown = client.post("/api/v1/targets/ec/jobs", headers=headers,
                          json={"command": "upgrade", "revision": "nosuch@head"})
    assert unknown.status_code == 404, unknown.json
    assert "no branch labelled 'nosuch'" in unknown.json["detail"]
    bad = client.post("/api/v1/targets/ec/jobs", headers=headers,
                      json={"command": "upgrade", "revision": "no such@head"})
    assert bad.status_code == 400, bad.json
    assert version_table(url) == set()


def test_a_rollout_to_expand_head_upgrades_only_expand(branches_env):
    app, _, url = branches_env
    headers = token_headers(app, "olga", "operator")
    client = app.test_client()
    posted = client.post("/api/v1/rollouts", headers=headers, json={
        "command": "upgrade", "revision": "expand@head", "targets": ["ec"],
        "reason": "expand step of release 4.2"})
    assert posted.status_code == 202, posted.json
    done = wait_rollout(client, posted.json["id"], headers)
    assert done["status"] == "succeeded", done
    assert version_table(url) == {"e3"}


def test_branch_state_is_unknown_when_the_database_is(branches_env, tmp_path, monkeypatch):
    app, _, _ = branches_env
    monkeypatch.setenv("EC_URL", f"sqlite:///{tmp_path / 'missing.db'}")
    headers = token_headers(app, "vic", "viewer")
    listed = app.test_client().get("/api/v1/targets", headers=headers).json
    assert listed[0]["reachable"] is False
    assert by_label(listed)["expand"] == {"label": "expand", "head": "e3", "heads": ["e3"],
                                          "current": None, "pending": None}
