"""The dashboard in a real browser (Debian's Chromium via Playwright) against gunicorn.

Covers what only a browser proves: redirects and the login form as a user
sees them, htmx loading the cards and the offline SQL (from the vendored
fallback, as the CDN is unreachable here), the revision graph's SVG rows
lining up, and the logout form's CSRF token. Full-page screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from itertools import pairwise
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect
from support.browser import log_in
from support.common import ROOT

pytestmark = pytest.mark.browser

HTMX_VERSION = "2.0.11"
HTMX_FILE = ROOT / "static" / "vendor" / f"htmx-{HTMX_VERSION}.min.js"
SQL_TIMEOUT_MS = 20_000  # the offline SQL runs the target's env.py in a child process

STAGING = "demo-staging"
STAGING_CURRENT = "a05f2a9c7eb9"
PRODUCTION_CURRENT = "5e0a7b4d2f64"
# newest first, as the history page lists them (children before parents)
STAGING_PENDING = {"b16a3bad8fca", "c27b4cbe9a0d", "d38c5dcfab1e", "e49d6ed0bc2f",
                   "f5ae7fe1cd30"}
ALL_REVISIONS = {
    "1f3a9c2e7b10", "2b7d4e1a9c31", "3c8e5f2b0d42", "4d9f6a3c1e53", "5e0a7b4d2f64",
    "6f1b8c5e3a75", "7a2c9d6f4b86", "8b3d0e7a5c97", "9c4e1f8b6da8", "a05f2a9c7eb9",
    "b16a3bad8fca", "c27b4cbe9a0d", "d38c5dcfab1e", "e49d6ed0bc2f", "f5ae7fe1cd30"}
HEADS = ("c27b4cbe9a0d", "f5ae7fe1cd30")
BASES = ("1f3a9c2e7b10", "d38c5dcfab1e")
BRANCH_POINT = "4d9f6a3c1e53"
MERGE_POINT = "9c4e1f8b6da8"


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


def shoot(page: Page, artifacts, name: str) -> None:
    page.screenshot(path=str(artifacts / name), full_page=True)


def assert_htmx_from_fallback(page: Page) -> None:
    """htmx is there, in the vendored version (the CDN is unreachable offline)."""
    assert page.evaluate("() => window.htmx && window.htmx.version") == HTMX_VERSION


def test_anonymous_is_sent_to_login_and_wrong_password_is_rejected(anon_page, artifacts):
    page = anon_page
    page.goto("/")
    assert path_of(page) == "/login"
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.locator("input[name=csrf_token]")).to_have_count(1)
    assert_htmx_from_fallback(page)
    shoot(page, artifacts, "login.png")

    page.fill("#username", "admin")
    page.fill("#password", "not the password")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Log in").click()
    assert posted.value.status == 401
    expect(page.locator(".flash.error")).to_have_text("Wrong username or password.")
    assert path_of(page) == "/login"
    shoot(page, artifacts, "login-failed.png")

    page.goto("/")
    assert path_of(page) == "/login"
    expect(page.locator(".topbar .user")).to_have_count(0)


def test_dashboard_loads_both_cards_with_htmx(admin_page, artifacts):
    page = admin_page
    card_requests = []
    page.on("request", lambda r: card_requests.append(r) if r.url.endswith("/card") else None)
    page.goto("/")
    assert path_of(page) == "/"
    assert_htmx_from_fallback(page)
    expect(page.locator(".topbar .user")).to_contain_text("admin")

    staging = page.locator('article.card[data-target="demo-staging"]')
    production = page.locator('article.card[data-target="demo-production"]')
    for card in (staging, production):
        expect(card).to_have_attribute("data-loaded", "true")
        expect(card.locator(".loading")).to_have_count(0)
    assert sorted(urlsplit(r.url).path for r in card_requests) == [
        "/targets/demo-production/card", "/targets/demo-staging/card"]
    assert all(r.headers.get("hx-request") == "true" for r in card_requests)

    expect(staging.locator(".badge.tier-staging")).to_have_text("staging")
    expect(staging.locator("dd.current")).to_contain_text(STAGING_CURRENT)
    expect(staging.locator(".pending-count")).to_have_text("5 pending")
    expect(staging.locator(".branches-note")).to_contain_text("2 heads, on purpose")

    expect(production.locator(".badge.tier-production")).to_have_text("production")
    expect(production.locator(".badge.protected")).to_be_visible()
    expect(production.locator("dd.current")).to_contain_text(PRODUCTION_CURRENT)
    expect(production.locator(".pending-count")).to_have_text("10 pending")
    expect(production.locator(".branches-note")).to_contain_text("2 heads, on purpose")
    for card in (staging, production):
        for head in HEADS:
            expect(card.locator(f'a.rev[href$="/revisions/{head}"]')).to_have_count(1)
    shoot(page, artifacts, "dashboard.png")


def test_target_overview(admin_page, artifacts):
    page = admin_page
    page.goto(f"/targets/{STAGING}")
    expect(page.locator("ul.revlist.current")).to_contain_text(STAGING_CURRENT)
    pending = page.locator("ol.revlist.pending > li")
    expect(pending).to_have_count(5)
    listed = {t.strip()[:12] for t in pending.locator("a.rev").all_inner_texts()}
    assert listed == STAGING_PENDING
    expect(page.locator("table.history tbody tr[data-revision]")).to_have_count(10)
    shoot(page, artifacts, "overview.png")


def test_history_graph(admin_page, artifacts):
    page = admin_page
    page.goto(f"/targets/{STAGING}/history")
    rows = page.locator("table.history tbody tr[data-revision]")
    expect(rows).to_have_count(15)
    revisions = rows.evaluate_all("rows => rows.map(r => r.dataset.revision)")
    assert set(revisions) == ALL_REVISIONS
    expect(rows.locator("td.graph-col > svg.graph")).to_have_count(15)

    # every row's state on demo-staging
    classes = dict(zip(revisions, rows.evaluate_all("rows => rows.map(r => r.className)"),
                       strict=True))
    assert classes[STAGING_CURRENT] == "current"
    assert {r for r, c in classes.items() if c == "pending"} == STAGING_PENDING
    assert {r for r, c in classes.items() if c == "applied"} == \
        ALL_REVISIONS - STAGING_PENDING - {STAGING_CURRENT}
    expect(page.locator(f"#rev-{STAGING_CURRENT} .state")).to_have_text("current")

    # markers next to the message, not clipped by the message cell's ellipsis
    def marker(revision: str, cls: str, text: str) -> None:
        mark = page.locator(f"#rev-{revision} td.msg .mark.{cls}")
        expect(mark).to_have_text(text)
        expect(mark).to_be_visible()
        cell = page.locator(f"#rev-{revision} td.msg").bounding_box()
        box = mark.bounding_box()
        assert box["x"] + box["width"] <= cell["x"] + cell["width"] + 0.5, \
            f"{cls} marker of {revision} is clipped by the message column"

    marker(BRANCH_POINT, "branchpoint", "branch point")
    marker(MERGE_POINT, "mergepoint", "merge point")
    for head in HEADS:
        marker(head, "head", "head")
        expect(page.locator(f"#rev-{head} svg circle.node.head")).to_have_count(1)
    for base in BASES:
        marker(base, "base", "base")
        expect(page.locator(f"#rev-{base} svg circle.node.base")).to_have_count(1)
    expect(page.locator(".mark.label")).to_have_text("(reporting)")
    shoot(page, artifacts, "history.png")


def test_history_graph_rows_line_up(admin_page):
    """The per-row SVGs must touch each other, or the graph's lines have gaps."""
    page = admin_page
    page.goto(f"/targets/{STAGING}/history")
    boxes = page.locator("table.history svg.graph").evaluate_all(
        "svgs => svgs.map(s => { const b = s.getBoundingClientRect();"
        " return [b.x, b.y, b.width, b.height]; })")
    assert len(boxes) == 15
    assert len({(round(x, 1), round(w, 1)) for x, _, w, _ in boxes}) == 1, \
        f"graph columns are not aligned: {boxes}"
    gaps = [round(nxt[1] - (cur[1] + cur[3]), 2) for cur, nxt in pairwise(boxes)]
    assert all(abs(g) < 0.5 for g in gaps), f"vertical gaps between graph rows (px): {gaps}"


@pytest.mark.parametrize("revision", [MERGE_POINT, "7a2c9d6f4b86"])
def test_revision_page_highlights_source_and_loads_sql(admin_page, artifacts, revision):
    page = admin_page
    page.goto(f"/targets/{STAGING}/revisions/{revision}")
    expect(page.locator("h2.revtitle")).to_contain_text(revision)
    source = page.locator(".source .highlight")
    expect(source).to_contain_text(re.compile(rf"revision(: str)? = '{revision}'"))
    expect(source).to_contain_text("def upgrade()")
    # Pygments wraps tokens in classed spans (keywords, names, strings)
    assert source.locator("span.k, span.kn").count() > 0
    assert source.locator("span.nf").count() >= 2  # upgrade and downgrade

    upgrade = page.locator("#revision-sql #sql-upgrade")
    downgrade = page.locator("#revision-sql #sql-downgrade")
    expect(upgrade).to_be_visible(timeout=SQL_TIMEOUT_MS)
    expect(downgrade).to_be_visible(timeout=SQL_TIMEOUT_MS)
    expect(page.locator("#revision-sql .loading")).to_have_count(0)
    expect(page.locator("#revision-sql .errorbox")).to_have_count(0)
    for block in (upgrade, downgrade):
        expect(block.locator(".sql .highlight")).to_contain_text("UPDATE alembic_version")
    expect(upgrade.locator("h3")).to_contain_text(revision)
    name = "revision.png" if revision == MERGE_POINT else "revision-sql.png"
    shoot(page, artifacts, name)


def test_unknown_target_and_revision_are_404(admin_page, artifacts):
    page = admin_page
    response = page.goto("/targets/nope")
    assert response.status == 404
    expect(page.locator(".error-page h1")).to_have_text("404 · Not Found")
    expect(page.locator(".error-page")).to_contain_text("There is no target called 'nope'.")
    shoot(page, artifacts, "not-found.png")

    response = page.goto(f"/targets/{STAGING}/revisions/0123456789ab")
    assert response.status == 404
    expect(page.locator(".error-page h1")).to_have_text("404 · Not Found")
    expect(page.locator(".error-page")).to_contain_text(
        f"Target {STAGING} has no revision '0123456789ab'.")


def test_logout_button_ends_the_session(new_page, artifacts):
    page = new_page()  # own session: logging out must not end the shared admin one
    page.goto("/login")
    log_in(page)
    assert path_of(page) == "/"
    form = page.locator(".topbar form[action$='/logout']")
    assert form.get_attribute("method") == "post"
    token = form.locator("input[name=csrf_token]").get_attribute("value")
    assert token and len(token) > 20

    with page.expect_response(lambda r: urlsplit(r.url).path == "/logout") as posted:
        form.get_by_role("button", name="Log out").click()
    assert posted.value.request.method == "POST"
    assert posted.value.status == 302
    page.wait_for_load_state()
    assert path_of(page) == "/login"
    expect(page.locator(".flash")).to_have_text("You are logged out.")

    page.goto(f"/targets/{STAGING}")
    assert path_of(page) == "/login"


def test_htmx_sri_matches_the_vendored_file(anon_page):
    expected = "sha384-" + base64.b64encode(
        hashlib.sha384(HTMX_FILE.read_bytes()).digest()).decode()
    page = anon_page
    vendor_requests = []
    page.on("request", lambda r: vendor_requests.append(r.url)
            if r.url.endswith(f"/static/vendor/htmx-{HTMX_VERSION}.min.js") else None)
    page.goto("/login")
    cdn = page.locator('script[src^="https://cdn.jsdelivr.net/npm/htmx.org@"]')
    expect(cdn).to_have_count(1)
    assert re.search(rf"@{re.escape(HTMX_VERSION)}/", cdn.get_attribute("src"))
    assert cdn.get_attribute("integrity") == expected
    assert cdn.get_attribute("crossorigin") == "anonymous"
    # offline, the fallback is what actually runs, and it is the same file
    assert_htmx_from_fallback(page)
    assert len(vendor_requests) == 1
    served = page.request.get(vendor_requests[0])
    assert served.ok
    assert served.body() == HTMX_FILE.read_bytes()
