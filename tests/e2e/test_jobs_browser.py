"""Browser: plan → confirm → live output → succeeded, on a real gunicorn."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from support.browser import CHROMIUM_ARGS, VIEWPORT, log_in  # noqa: F401
from support.common import PASSWORD
from support.envtools import linear, make_env, sqlite_url, write_targets_file

pytestmark = pytest.mark.browser


def test_plan_confirm_live_output_succeeded(chromium, gunicorn_server, tmp_path, artifacts):
    revs = linear(3)
    revs[1].upgrade = ("import time; print('copying rows...', flush=True); "
                       "time.sleep(0 if op.get_context().as_sql else 4)")
    ini = make_env(tmp_path / "env", revs)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-staging": {
        "label": "Shop (staging)", "tier": "staging", "alembic_ini": str(ini),
        "url_env": "E2E_SHOP_URL"}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets),
                            "E2E_SHOP_URL": sqlite_url(tmp_path / 'shop.db')})
    context = chromium.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto("/targets/shop-staging")
        page.get_by_role("link", name="Upgrade to head").click()
        expect(page.locator("#plan")).to_contain_text("alembic upgrade head")
        expect(page.locator(".plan-steps li")).to_have_count(3)
        expect(page.locator("#plan .sql-sections")).to_contain_text("CREATE TABLE t_r000")
        expect(page.locator(".plan-to")).to_contain_text("r002")
        page.screenshot(path=str(artifacts / "plan.png"), full_page=True)

        page.locator("#confirm-plan").click()
        expect(page).to_have_url(__import__("re").compile(r"/jobs/\d+$"))
        status = page.locator("#job-status .job")
        # live: the page shows the output of the running migration, then its end
        expect(status).to_have_attribute("data-status", "running")
        expect(page.locator("#job-log")).to_contain_text("Running upgrade r000 -> r001")
        page.screenshot(path=str(artifacts / "job-running.png"), full_page=True)
        expect(status).to_have_attribute("data-status", "succeeded", timeout=30_000)
        expect(page.locator(".job-to")).to_have_text("r002")
        expect(page.locator("#job-log")).to_contain_text("database now at: r002")
        page.screenshot(path=str(artifacts / "job-succeeded.png"), full_page=True)

        page.goto("/targets/shop-staging")
        expect(page.locator(".revlist.current")).to_contain_text("r002")
        expect(page.locator("table.jobs")).to_contain_text("succeeded")
        page.screenshot(path=str(artifacts / "overview-after-job.png"), full_page=True)
    finally:
        context.close()
