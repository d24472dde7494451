"""Browser: an operator requests approval, an approver in a second browser
context ticks every revision as viewed and approves, the job runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect
from support.browser import VIEWPORT, log_in
from support.common import PASSWORD, ROOT
from support.envtools import linear, make_env, sqlite_url, write_targets_file

pytestmark = pytest.mark.browser


def create_user(env: dict, name: str, role: str) -> None:
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-user", name,
                    "--role", role, "--password-stdin"], cwd=ROOT, env=env, check=True,
                   input=PASSWORD + "\n", text=True, capture_output=True)


def test_operator_requests_approver_approves_job_runs(chromium, gunicorn_server, tmp_path,
                                                     artifacts):
    ini = make_env(tmp_path / "env", linear(3))
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-prod": {
        "label": "Shop (production)", "tier": "production", "alembic_ini": str(ini),
        "url_env": "E2E_PROD_URL", "policy": {"approvals_required": 1}}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets),
                            "E2E_PROD_URL": sqlite_url(tmp_path / 'prod.db')})
    create_user(gunicorn_server.env, "olga", "operator")
    create_user(gunicorn_server.env, "anna", "approver")

    operator = chromium.new_context(base_url=base, viewport=VIEWPORT)
    approver = chromium.new_context(base_url=base, viewport=VIEWPORT)
    try:
        page = operator.new_page()
        page.set_default_timeout(20_000)
        page.goto("/login")
        log_in(page, "olga", PASSWORD)
        page.goto("/targets/shop-prod")
        page.get_by_role("link", name="Upgrade to head").click()
        expect(page.locator("#request-approval")).to_be_visible()
        expect(page.locator("#confirm-plan")).to_have_count(0)
        page.fill("#reason", "Release 7: order tables")
        page.screenshot(path=str(artifacts / "request-plan.png"), full_page=True)
        page.locator("#request-approval").click()
        expect(page).to_have_url(re.compile(r"/requests/\d+$"))
        expect(page.locator("#request")).to_have_attribute("data-status", "open")
        expect(page.locator("#approve")).to_have_count(0)  # not for one's own request
        request_url = page.url

        other = approver.new_page()
        other.set_default_timeout(20_000)
        other.goto("/login")
        log_in(other, "anna", PASSWORD)
        other.goto(request_url)
        expect(other.locator(".reason")).to_contain_text("Release 7")
        expect(other.locator(".plan-steps li")).to_have_count(3)
        expect(other.locator("#approve")).to_be_disabled()  # until every revision is viewed
        for rev in ("r000", "r001", "r002"):
            other.locator(f"#viewed-{rev} button").click()
            expect(other.locator(f"#viewed-{rev} button")).to_have_text("☑ Viewed")
        expect(other.locator("#approve")).to_be_enabled()
        other.fill("#decision textarea[name=comment]", "SQL reviewed")
        other.screenshot(path=str(artifacts / "request-review.png"), full_page=True)
        other.once("dialog", lambda dialog: dialog.accept())
        other.locator("#approve").click()
        expect(other).to_have_url(re.compile(r"/jobs/\d+$"))
        expect(other.locator("#job-status .job")).to_have_attribute(
            "data-status", "succeeded", timeout=30_000)
        expect(other.locator(".job-to")).to_have_text("r002")
        other.screenshot(path=str(artifacts / "approved-job.png"), full_page=True)

        page.goto(request_url)
        expect(page.locator("#request")).to_have_attribute("data-status", "executed")
        expect(page.locator(".decisions")).to_contain_text("anna approved")
        page.screenshot(path=str(artifacts / "request-executed.png"), full_page=True)
    finally:
        operator.close()
        approver.close()
