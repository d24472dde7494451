"""Browser: review first, decide after (issue 20, item 2), the whole walk —
an operator requests, the approver's inbox counts it, she ticks every
revision as viewed and requests changes, the requester changes a revision
file and submits the new plan, the approver looks again at the changed
revision only and approves, the job runs, and its changelog entries carry
the request and the job's schema diff (the team lead's path of issue 20).
The approver works at 1440x900 (and checks the phone layout), the requester
at 390x844 (a phone); screenshots of both in test-artifacts/."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect
from support.browser import log_in
from support.common import PASSWORD, ROOT
from support.envtools import linear, make_env, sqlite_url, write_targets_file

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


def create_user(env: dict, name: str, role: str) -> None:
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-user", name,
                    "--role", role, "--password-stdin"], cwd=ROOT, env=env, check=True,
                   input=PASSWORD + "\n", text=True, capture_output=True)


def fits(page) -> None:
    """No horizontal scrolling of the page itself."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"] + 1, width


def test_review_request_changes_new_plan_approve(chromium, gunicorn_server, tmp_path,
                                                 artifacts):
    ini = make_env(tmp_path / "env", linear(3))
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-prod": {
        "label": "Shop (production)", "tier": "production", "alembic_ini": str(ini),
        "url_env": "E2E_PROD_URL", "policy": {"approvals_required": 1}}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets),
                            "E2E_PROD_URL": sqlite_url(tmp_path / "prod.db")}, workers=1)
    create_user(gunicorn_server.env, "olga", "operator")
    create_user(gunicorn_server.env, "anna", "approver")
    requester_context = chromium.new_context(base_url=base, viewport=PHONE)
    approver_context = chromium.new_context(base_url=base, viewport=DESKTOP)
    try:
        olga = requester_context.new_page()
        olga.set_default_timeout(20_000)
        olga.goto("/login")
        log_in(olga, "olga", PASSWORD)
        olga.goto("/targets/shop-prod/plan?command=upgrade&revision=head")
        olga.fill("#reason", "Release 7: order tables")
        olga.locator("#request-approval").click()
        expect(olga).to_have_url(re.compile(r"/requests/\d+$"))
        request_url = olga.url

        anna = approver_context.new_page()
        anna.set_default_timeout(20_000)
        anna.goto("/login")
        log_in(anna, "anna", PASSWORD)
        expect(anna.locator("#nav-requests .count")).to_have_text("1")
        anna.goto(request_url)
        heads = anna.locator(".review-head")
        expect(heads).to_have_count(3)
        expect(heads.first).to_contain_text("revision r000 · r000")
        expect(anna.locator("#approve")).to_be_disabled()
        anna.locator("#rev-r001 summary", has_text="Python source").click()
        expect(anna.locator("#rev-r001 .source")).to_contain_text("def upgrade")
        for rev in ("r000", "r001", "r002"):
            anna.locator(f"#viewed-{rev} button").click()
            expect(anna.locator(f"#viewed-{rev} button")).to_have_text("☑ Viewed")
        expect(anna.locator("#review-progress")).to_have_text("3 of 3 revisions viewed")
        expect(anna.locator("#approve")).to_be_enabled()
        anna.screenshot(path=str(artifacts / "review-approver-1440.png"), full_page=True)
        anna.fill("#decision textarea[name=comment]", "r001: name needs 80 characters")
        anna.locator("#request-changes").click()
        expect(anna.locator("#request")).to_have_attribute("data-status", "changes_requested")
        expect(anna.locator("#nav-requests .count")).to_have_count(0)

        olga.reload()
        expect(olga.locator("#next-step")).to_contain_text("submit the new plan")
        expect(olga.locator("#thread")).to_contain_text("r001: name needs 80 characters")
        fits(olga)
        olga.screenshot(path=str(artifacts / "review-requester-390.png"), full_page=True)
        path = tmp_path / "env" / "versions" / "r001_rev.py"
        path.write_text(path.read_text().replace("sa.String(50)", "sa.String(80)"))
        olga.fill(".new-plan-form textarea[name=comment]", "widened to 80")
        olga.locator("#submit-new-plan").click()
        expect(olga.locator("#request")).to_have_attribute("data-status", "open")
        expect(olga.locator("#thread")).to_contain_text("New plan submitted by olga")

        anna.reload()
        expect(anna.locator("#nav-requests .count")).to_have_text("1")
        expect(anna.locator("#review-progress")).to_have_text("2 of 3 revisions viewed")
        expect(anna.locator("#viewed-r001 button")).to_have_text("☐ Viewed")
        expect(anna.locator("#approve")).to_be_disabled()
        anna.locator("#viewed-r001 button").click()
        expect(anna.locator("#approve")).to_be_enabled()
        anna.set_viewport_size(PHONE)
        fits(anna)
        anna.screenshot(path=str(artifacts / "review-approver-390.png"), full_page=True)
        anna.once("dialog", lambda dialog: dialog.accept())
        anna.locator("#approve").click()
        expect(anna).to_have_url(re.compile(r"/jobs/\d+$"))
        expect(anna.locator("#job-status .job")).to_have_attribute(
            "data-status", "succeeded", timeout=30_000)
        job_url = anna.url

        # the changelog: the job's three revisions, its request, and its schema diff
        anna.set_viewport_size(DESKTOP)
        anna.goto("/targets/shop-prod/changelog")
        rows = anna.locator(".changelog-entry")
        expect(rows).to_have_count(3)
        expect(rows.first).to_contain_text("r002")
        expect(rows.first.locator(f'a[href="{job_url[len(base):]}"]')).to_have_count(1)
        expect(rows.first).to_contain_text("request #")
        diff = anna.locator(".changelog-diff").first
        expect(diff).to_contain_text("add table t_r001 (id INTEGER NOT NULL, name VARCHAR(80)")
        expect(diff).to_contain_text("alembic_version base → r002")
        anna.screenshot(path=str(artifacts / "changelog-1440.png"), full_page=True)
        anna.set_viewport_size(PHONE)
        fits(anna)
        anna.screenshot(path=str(artifacts / "changelog-390.png"), full_page=True)

        requester_context.pages[0].set_viewport_size(DESKTOP)
        olga.goto(request_url)
        expect(olga.locator("#request")).to_have_attribute("data-status", "executed")
        entries = olga.locator(".thread-entry")
        expect(entries).to_have_count(4)  # changes, system note, olga's comment, approval
        expect(entries.last).to_contain_text("approved")
        olga.screenshot(path=str(artifacts / "review-executed-1440.png"), full_page=True)
    finally:
        requester_context.close()
        approver_context.close()
