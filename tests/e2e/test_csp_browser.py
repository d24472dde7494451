"""The pages work under the Content-Security-Policy: htmx (from the vendored
fallback, the CDN being unreachable here) loads the fragments, confirmations
come from the static helper and hx-confirm, and the browser reports no CSP
violation on any page."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser

PAGES = ["/", "/targets/demo-staging", "/targets/demo-staging/history",
         "/targets/demo-staging/revisions/a05f2a9c7eb9", "/targets/demo-staging/preview",
         "/targets/demo-production/plan?command=upgrade&revision=heads", "/requests",
         "/audit", "/admin/users", "/login"]
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' +
                    (e.sourceFile || '') + ':' + e.lineNumber));
"""


def _watch(page: Page) -> list[str]:
    console: list[str] = []
    page.add_init_script(WATCH)
    page.on("console", lambda m: console.append(m.text)
            if "Content Security Policy" in m.text or "Content-Security-Policy" in m.text
            else None)
    return console


def test_no_csp_violation_on_any_page(admin_page, artifacts):
    page = admin_page
    console = _watch(page)
    for url in PAGES:
        response = page.goto(url)
        assert response.headers["content-security-policy"].startswith("default-src 'none'")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("() => window.htmx && window.htmx.version") == "2.0.11", url
        assert page.evaluate("() => window.__csp") == [], url
        # htmx injected no <style> of its own
        assert page.locator("head style").count() == 0, url
    page.goto("/")
    expect(page.locator(".card").first).to_be_visible()
    expect(page.locator(".card dd.current").first).to_be_visible()
    assert console == [], console
    page.screenshot(path=str(artifacts / "csp-dashboard.png"), full_page=True)


def test_confirmations_work_under_the_csp(admin_page):
    page = admin_page
    console = _watch(page)
    page.goto("/admin/users")
    asked: list[str] = []

    def dismiss(dialog):
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator("#user-admin button.disable").click()
    expect(page.locator("#user-admin .state")).to_have_text("active")
    assert asked == ["Disable admin?"]
    # accepted: htmx posts (CSRF header from <body>), the server refuses to
    # disable the last admin and the swapped-in page says so
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_request(lambda r: r.url.endswith("/disable")) as posted:
        page.locator("#user-admin button.disable").click()
    assert posted.value.method == "POST" and posted.value.headers.get("x-csrftoken")
    expect(page.locator(".flash.error")).to_contain_text("last active admin")
    assert page.evaluate("() => window.__csp") == [] and console == []
