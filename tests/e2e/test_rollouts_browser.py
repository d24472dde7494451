"""Browser: start a fleet rollout from the form, watch it live, cancel it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from support.browser import VIEWPORT, PageProblems, log_in
from support.common import PASSWORD
from support.envtools import make_env, sqlite_url, write_targets_file
from support.rollouttools import two_revisions

pytestmark = pytest.mark.browser


def test_rollout_page_is_live_then_stops_polling(chromium, gunicorn_server, tmp_path,
                                                 artifacts):
    ini = make_env(tmp_path / "env", two_revisions(sleep=1))
    targets = write_targets_file(tmp_path / "targets.toml", {
        "eu-staging": {"tier": "staging", "alembic_ini": str(ini), "url_env": "E2E_S_URL",
                       "tags": ["eu"]},
        "eu-production": {"tier": "production", "alembic_ini": str(ini),
                          "url_env": "E2E_P_URL", "tags": ["eu"],
                          "policy": {"approvals_required": 1}}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets),
                            "E2E_S_URL": sqlite_url(tmp_path / "s.db"),
                            "E2E_P_URL": sqlite_url(tmp_path / "p.db")})
    context = chromium.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems = PageProblems(base)
    page.on("dialog", lambda dialog: dialog.accept())  # the data-confirm questions
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto("/rollouts")
        problems.watch(page)  # from here on (the index's cards stop loading on leaving it)
        page.fill("input[name=tag]", "eu")
        page.fill("input[name=reason]", "release 9")
        page.get_by_role("button", name="Start rollout").click()
        expect(page).to_have_url(re.compile(r"/rollouts/\d+$"))
        staging = page.locator('tr[data-target="eu-staging"]')
        production = page.locator('tr[data-target="eu-production"]')
        # live, without a reload: staging runs and ends, then production waits
        expect(staging).to_have_attribute("data-step-status", "succeeded", timeout=30_000)
        expect(production).to_have_attribute("data-step-status", "awaiting_approval",
                                              timeout=30_000)
        expect(production).to_contain_text("request #")
        page.screenshot(path=str(artifacts / "rollout-awaiting-approval.png"), full_page=True)
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator(".rollout")).to_have_attribute("data-status", "cancelled")
        expect(production).to_have_attribute("data-step-status", "not_run")
        # ended: the page no longer polls
        expect(page.locator("#rollout-status")).not_to_have_attribute("hx-get", re.compile("."))
        page.screenshot(path=str(artifacts / "rollout-cancelled.png"), full_page=True)
    finally:
        context.close()
    assert not problems.js_errors and not problems.failed, (problems.js_errors,
                                                            problems.failed)
