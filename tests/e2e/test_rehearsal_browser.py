"""Browser: rehearse a plan on a scratch copy from the plan page; the demo
database stays where it was."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

PLAN = "/targets/demo-staging/plan?command=upgrade&revision=heads"


def current_of(page) -> list[str]:
    response = page.request.get("/api/v1/targets")
    assert response.ok, response.status
    return next(t["current"] for t in response.json() if t["name"] == "demo-staging")


def test_rehearse_from_the_plan_page(admin_page, artifacts):
    page = admin_page
    before = current_of(page)
    page.goto(PLAN)
    section = page.locator("#rehearsal")
    expect(section).to_contain_text("Not rehearsed")
    page.locator("#rehearse").click()
    result = page.locator("#rehearsal-result")
    expect(result).to_contain_text("Rehearsed OK on", timeout=30_000)
    expect(result).to_contain_text("5 steps in")
    expect(result).to_contain_text("on a copy of the SQLite file.")
    expect(section.locator("table.timings tbody tr").first).to_be_visible()
    expect(page.locator("#rehearse")).to_have_text("Rehearse again")
    section.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "plan-rehearsed.png"), full_page=True)
    assert current_of(page) == before  # only the scratch copy moved
