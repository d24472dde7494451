"""One-step buttons per branch (issue 20, item 7): a database at two current
revisions (the demo once upgraded to ``heads``: the main line and the
``reporting`` branch) is offered "one step" up and down on each branch, as
Alembic's relative identifiers ``<label>@-1`` / ``<revision>@-1`` /
``<label>@+1``. The links lead to the plan page (GET, nothing runs); the plan
and the job accept those revisions. The bundled demo on SQLite, real jobs.
"""

from __future__ import annotations

import html as html_lib
import re
from urllib.parse import parse_qsl, urlsplit

from support.common import csrf_from
from support.jobtools import token_headers, version_table, wait_job

from webapp.core.branches import branch_steps

MAIN_HEAD, REPORTING_HEAD, REPORTING_BELOW = "c27b4cbe9a0d", "f5ae7fe1cd30", "e49d6ed0bc2f"


def step_links(page: str) -> dict[str, str]:
    """``{"upgrade <rev>" | "downgrade <rev>": href}`` of the per-branch buttons."""
    found = re.findall(r'<a class="button (?:danger )?branch-step-(?:up|down)"[^>]*'
                       r'href="([^"]+)"', page)
    links = {}
    for href in found:
        query = dict(parse_qsl(urlsplit(html_lib.unescape(href)).query))
        links[f"{query['command']} {query['revision']}"] = html_lib.unescape(href)
    return links


def plan_steps(client, href: str) -> list[tuple[str, str]]:
    page = client.get(href)
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    return re.findall(r"Running (?:upgrade|downgrade) (\w+) -&gt; (\w+)",
                      page.get_data(as_text=True))


def test_demo_at_heads_offers_one_step_per_branch(demo_app, logged_in):
    headers = token_headers(demo_app, "ops", "operator")
    url = demo_app.extensions["alembic_dashboard"].database_url(
        demo_app.extensions["alembic_dashboard"].get("demo-staging"))
    posted = logged_in.post("/api/v1/targets/demo-staging/jobs", headers=headers,
                            json={"command": "upgrade", "revision": "heads"})
    assert posted.status_code == 202, posted.json
    assert wait_job(logged_in, posted.json["job"], headers)["status"] == "succeeded"
    assert version_table(url) == {MAIN_HEAD, REPORTING_HEAD}

    page = logged_in.get("/targets/demo-staging").get_data(as_text=True)
    assert 'id="branch-steps"' in page
    links = step_links(page)
    # both branches are at their heads: one step down on each, named by its label
    # when it has one, else by the revision
    assert set(links) == {f"downgrade {MAIN_HEAD}@-1", "downgrade reporting@-1"}
    assert plan_steps(logged_in, links["downgrade reporting@-1"]) == [
        (REPORTING_HEAD, REPORTING_BELOW)]
    assert plan_steps(logged_in, links[f"downgrade {MAIN_HEAD}@-1"]) == [
        (MAIN_HEAD, "b16a3bad8fca")]
    assert version_table(url) == {MAIN_HEAD, REPORTING_HEAD}  # the plan pages ran nothing
    # a step that is not there: Alembic's own refusal, as a plan error
    beyond = logged_in.get("/api/v1/targets/demo-staging/plan?command=upgrade"
                           "&revision=reporting%40%2B1", headers=headers)
    assert beyond.status_code == 400 and "didn't produce 1 migrations" in beyond.json["detail"], \
        beyond.json

    # confirm the reporting step down from its plan page: the job runs it
    plan_html = logged_in.get(links["downgrade reporting@-1"]).get_data(as_text=True)
    plan_hash = re.search(r'name="plan_hash" value="([0-9a-f]+)"', plan_html).group(1)
    done = logged_in.post("/targets/demo-staging/jobs", data={
        "csrf_token": csrf_from(plan_html), "command": "downgrade",
        "revision": "reporting@-1", "plan_hash": plan_hash})
    assert done.status_code == 303, done.get_data(as_text=True)[:2000]
    job_id = int(done.headers["Location"].rsplit("/", 1)[1])
    job = wait_job(logged_in, job_id, headers)
    assert job["status"] == "succeeded", job
    assert job["revision"] == "reporting@-1"
    assert version_table(url) == {MAIN_HEAD, REPORTING_BELOW}

    # now the reporting branch can also step up again, through the API too
    links = step_links(logged_in.get("/targets/demo-staging").get_data(as_text=True))
    assert "upgrade reporting@+1" in links and "downgrade reporting@-1" in links
    plan = logged_in.get("/api/v1/targets/demo-staging/plan?command=upgrade"
                         "&revision=reporting%40%2B1", headers=headers)
    assert plan.status_code == 200, plan.json
    assert [s["revision"] for s in plan.json["steps"]] == [REPORTING_HEAD]


def test_relative_revisions_are_checked_before_any_plan(demo_app, logged_in):
    headers = token_headers(demo_app, "ops", "operator")
    unknown = logged_in.post("/api/v1/targets/demo-staging/jobs", headers=headers,
                             json={"command": "downgrade", "revision": "nosuch@-1"})
    assert unknown.status_code == 404, unknown.json
    assert "nosuch" in unknown.json["detail"]
    for bad in ("reporting@+x", "reporting@+0", "report ing@-1", "reporting@-100"):
        answer = logged_in.post("/api/v1/targets/demo-staging/jobs", headers=headers,
                                json={"command": "downgrade", "revision": bad})
        assert answer.status_code == 400, (bad, answer.json)


def test_branch_steps_need_several_current_revisions(demo_app):
    catalog = demo_app.extensions["alembic_dashboard"]
    history = catalog.history(catalog.get("demo-staging"))
    assert branch_steps(history, ("a05f2a9c7eb9",)) == []  # bare +1/-1 are not ambiguous
    steps = {s.name: s for s in branch_steps(history, ("b16a3bad8fca", REPORTING_BELOW))}
    assert steps["b16a3bad8fca"].up == "b16a3bad8fca@+1"
    assert steps["reporting"].up == "reporting@+1"
    assert steps["reporting"].down == "reporting@-1"
