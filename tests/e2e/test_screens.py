"""The screens a team lead uses every day, at 1440x900 and at a phone's 390x844
(issue 11, items 1-6), in Debian's Chromium against one real gunicorn per module.

The server's targets: ``demo-qa`` (the demo environment, staging, part-way),
``demo-production`` (the demo environment, production, protected), two
``slow-*`` targets whose middle revision prints 80 lines over ~5 s and whose
last one fails, and ``offline`` (a PostgreSQL URL nobody listens on).
Screenshots of the dashboard, history, plan, request and job pages at both
sizes go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from support.browser import TIMEOUT_MS, log_in
from support.common import PASSWORD, ROOT, start_gunicorn, stop_gunicorn
from support.envtools import linear, make_env, sqlite_url, write_targets_file

pytestmark = pytest.mark.browser

SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
DEMO_INI = ROOT / "examples" / "demo" / "alembic.ini"
QA_START = "5e0a7b4d2f64"  # before the branch point's second branch: 10 revisions pending
JOB_TIMEOUT_MS = 40_000


def _set_version(db: Path, revision: str) -> None:
    """Move a SQLite target's version table (as a CLI run elsewhere would)."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn (one worker, so its caches are the ones the test sees) on the
    targets above; ``anna`` is an approver. Yields a dict of facts."""
    from webapp.core.demo import prepare_demo_databases
    from webapp.core.runner import run_command
    from webapp.core.targets import load_targets

    tmp = tmp_path_factory.mktemp("screens")
    revs = linear(3, prefix="s")
    revs[1].upgrade = ("import time; _ = None if op.get_context().as_sql else "
                       "[(print(f'copying batch {i:02d} of 80', flush=True), time.sleep(0.06)) "
                       "for i in range(80)]")
    revs[2].upgrade = 'assert op.get_context().as_sql, "disk full (simulated)"'
    slow_ini = make_env(tmp / "slow", revs)
    dbs = {name: tmp / f"{name}.db" for name in
           ("demo-qa", "demo-production", "slow-desktop", "slow-phone")}
    spec = {
        "demo-qa": {"label": "Demo shop (QA)", "tier": "staging", "alembic_ini": str(DEMO_INI),
                    "url_env": "SCREENS_QA_URL"},
        "demo-production": {"label": "Demo shop (production)", "tier": "production",
                            "alembic_ini": str(DEMO_INI), "url_env": "SCREENS_PROD_URL",
                            "policy": {"approvals_required": 1, "allow_downgrade": False}},
        "slow-desktop": {"label": "Slow (desktop)", "tier": "staging",
                         "alembic_ini": str(slow_ini), "url_env": "SCREENS_SLOW_D_URL"},
        "slow-phone": {"label": "Slow (phone)", "tier": "staging",
                       "alembic_ini": str(slow_ini), "url_env": "SCREENS_SLOW_P_URL"},
        "offline": {"label": "Offline", "tier": "development", "alembic_ini": str(slow_ini),
                    "url_env": "SCREENS_OFFLINE_URL"},
    }
    env = {"SCREENS_QA_URL": sqlite_url(dbs["demo-qa"]),
           "SCREENS_PROD_URL": sqlite_url(dbs["demo-production"]),
           "SCREENS_SLOW_D_URL": sqlite_url(dbs["slow-desktop"]),
           "SCREENS_SLOW_P_URL": sqlite_url(dbs["slow-phone"]),
           "SCREENS_OFFLINE_URL": "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"}
    targets_file = write_targets_file(tmp / "targets.toml", spec)
    targets = load_targets(targets_file, url_defaults=env)
    prepare_demo_databases(targets)  # demo-production to its DEMO_START revision
    run_command(targets["demo-qa"], "upgrade", QA_START, url=env["SCREENS_QA_URL"])
    env["DASHBOARD_TARGETS"] = str(targets_file)
    instance = tmp / "instance"
    instance.mkdir()
    proc, base, full_env = start_gunicorn(instance, tmp / "gunicorn.log", env, workers=1,
                                          secret="screens-secret")
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "create-user", "anna",
                    "--role", "approver", "--password-stdin"], cwd=ROOT, env=full_env,
                   check=True, input=PASSWORD + "\n", text=True, capture_output=True)
    try:
        yield {"base": base, "dbs": dbs}
    finally:
        stop_gunicorn(proc)


@pytest.fixture(scope="module")
def states(chromium, server) -> dict:
    """Logged-in storage states of ``admin`` and ``anna``."""
    result = {}
    for user in ("admin", "anna"):
        context = chromium.new_context(base_url=server["base"])
        page = context.new_page()
        page.goto("/login")
        log_in(page, user, PASSWORD)
        assert not page.url.endswith("/login"), f"{user} login failed"
        result[user] = context.storage_state()
        context.close()
    return result


@pytest.fixture(scope="module")
def flow(chromium, server, states) -> dict:
    """What the pages show: an open request on demo-production (R2), one
    approved by anna whose job ran (R1, job J1), and a dashboard visited
    (drift computed) before J1 changed demo-production."""
    context = chromium.new_context(base_url=server["base"], storage_state=states["admin"])
    approver = chromium.new_context(base_url=server["base"], storage_state=states["anna"])
    context.set_default_timeout(TIMEOUT_MS)
    approver.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        ids = []
        for reason in ("Release 9: reporting tables", "Release 8: everything pending"):
            page.goto("/targets/demo-production/plan?command=upgrade&revision=heads")
            page.fill("#reason", reason)
            page.locator("#request-approval").click()
            expect(page).to_have_url(re.compile(r"/requests/\d+$"))
            ids.append(int(page.url.rsplit("/", 1)[1]))
        page.goto("/")
        card = page.locator('article.card[data-target="demo-production"]')
        expect(card.locator(".drift")).to_have_text("not at head")
        other = approver.new_page()
        other.goto(f"/requests/{ids[1]}")
        other.check("#without-viewing")
        other.once("dialog", lambda dialog: dialog.accept())
        other.locator("#approve").click()
        expect(other).to_have_url(re.compile(r"/jobs/\d+$"))
        job = int(other.url.rsplit("/", 1)[1])
        expect(other.locator("#job-summary")).to_have_attribute(
            "data-status", "succeeded", timeout=JOB_TIMEOUT_MS)
        return {"open_request": ids[0], "approved_request": ids[1], "job": job}
    finally:
        context.close()
        approver.close()


@pytest.fixture(params=list(SIZES))
def size(request) -> str:
    return request.param


@pytest.fixture
def pages(chromium, server, states, size):
    """Factory ``pages(user="admin") -> Page`` at this test's size; no JavaScript
    error may happen on them."""
    contexts, errors = [], []

    def factory(user: str | None = "admin") -> Page:
        context = chromium.new_context(base_url=server["base"], viewport=SIZES[size],
                                       storage_state=states[user] if user else None)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield factory
    for context in contexts:
        context.close()
    assert not errors, f"JavaScript errors: {errors}"


def fits(page: Page) -> None:
    """No horizontal scrolling: the page is not wider than the screen."""
    width, inner = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"{page.url} is {width} px wide on a {inner} px screen"


def shoot(page: Page, artifacts: Path, name: str, size: str) -> None:
    w, h = SIZES[size]["width"], SIZES[size]["height"]
    page.screenshot(path=str(artifacts / f"{name}-{w}x{h}.png"), full_page=True)


def test_every_page_fits_the_screen(pages, flow, size, artifacts):
    """Item 1 (and the pages of items 2-6): no horizontal scroll at either
    size; tables are stacked rows on a phone; screenshots."""
    page = pages()
    page.goto("/")
    for card in page.locator("article.card").all():
        expect(card).to_have_attribute("data-loaded", "true")
    expect(page.locator(".drift.muted")).to_have_count(0)  # drift badges loaded
    # drift was "not at head" before J1; the job changed the database: recomputed
    expect(page.locator('[data-target="demo-production"] .drift')).not_to_have_text(
        "not at head")
    expect(page.locator('[data-target="demo-production"] .pending-count')).to_have_text(
        "up to date")
    fits(page)
    shoot(page, artifacts, "dashboard", size)

    checks = [
        ("/targets/demo-qa", "target", "#actions"),
        ("/targets/demo-qa/history", "history", "table.history"),
        ("/targets/demo-qa/revisions/9c4e1f8b6da8", None, "#revision-sql #sql-upgrade"),
        ("/targets/demo-qa/plan?command=upgrade&revision=heads", "plan", "#decision"),
        (f"/jobs/{flow['job']}", "job", "#job-summary"),
        ("/requests", None, "table.requests"),
        ("/audit", None, "table.audit"),
        ("/targets/demo-qa/preview", None, "#preview h2"),
        ("/rollouts", "rollouts", "form.rollout-form"),
        ("/admin/users", "admin-users", "table.users"),
    ]
    for url, name, ready in checks:
        page.goto(url)
        expect(page.locator(ready).first).to_be_visible()
        expect(page.locator("main .loading")).to_have_count(0)
        fits(page)
        if name == "history":  # item 7: depends_on dashed, current revision ringed
            expect(page.locator(f"#rev-{QA_START} svg circle.node.current")).to_have_count(1)
            expect(page.locator("#rev-e49d6ed0bc2f svg line.depends")).to_have_count(1)
        if name:
            shoot(page, artifacts, name, size)

    page.goto("/audit")
    stacked = page.evaluate("() => getComputedStyle(document.querySelector("
                            "'table.audit tbody td')).display")
    page.goto("/requests")
    cell = page.locator(f'tr[data-request="{flow["open_request"]}"] td').first
    display = cell.evaluate("td => getComputedStyle(td).display")
    if size == "phone":
        assert display == "grid" and stacked == "grid"  # one row per block, label + value
        expect(page.locator("table.requests thead").first).to_be_hidden()
    else:
        assert display == "table-cell" and stacked == "table-cell"

    reviewer = pages("anna")
    reviewer.goto(f"/requests/{flow['open_request']}")
    expect(reviewer.locator("#approve")).to_be_visible()
    fits(reviewer)
    shoot(reviewer, artifacts, "request", size)

    anonymous = pages(None)
    anonymous.goto("/login")
    fits(anonymous)


def test_decision_bar_is_at_the_top(pages, flow, size):
    """Item 3: on the plan page the decision and its summary come first; SQL per
    revision folds. A request page reviews first and decides after (issue 20, item 2)."""
    page = pages()
    page.goto("/targets/demo-qa/plan?command=upgrade&revision=heads")
    bar = page.locator("#decision")
    expect(bar.locator(".decision-summary")).to_contain_text("alembic upgrade heads")
    expect(bar.locator(".steps-count")).to_have_text("10 steps")
    expect(bar.locator(".from-to")).to_contain_text(QA_START)
    expect(bar.locator(".badge.tier-staging")).to_be_visible()
    expect(bar.locator(".lint-count")).to_be_visible()
    button = bar.locator("#confirm-plan")
    expect(button).to_be_in_viewport()  # no scrolling to reach Run
    assert button.bounding_box()["y"] + 40 < SIZES[size]["height"]

    sections = page.locator("details.sql-section")
    assert sections.count() >= 10  # one per revision step
    page.get_by_role("button", name="Collapse all").click()
    expect(page.locator("details.sql-section[open]")).to_have_count(0)
    sections.nth(1).locator("summary").click()
    expect(page.locator("details.sql-section[open]")).to_have_count(1)

    # a request is the other way round: review first, decide after (issue 20, item 2)
    reviewer = pages("anna")
    reviewer.goto(f"/requests/{flow['open_request']}")
    expect(reviewer.locator("#request .approval-count")).to_have_text("approvals 0 / 1")
    expect(reviewer.locator("#tier-banner")).to_be_visible()
    review_y = reviewer.locator("#review").bounding_box()["y"]
    assert reviewer.locator("#decision").bounding_box()["y"] > review_y
    expect(reviewer.locator("#approve")).to_be_disabled()
    expect(reviewer.locator("#reject")).to_be_enabled()


def test_lint_reads_sqlite_batch_copies_as_rebuilds(pages, size):
    """Item 4: the demo's batch copies are table rebuilds, each with its revision."""
    page = pages()
    page.goto("/targets/demo-qa/plan?command=upgrade&revision=heads")
    expect(page.locator("#plan .sql-section").first).to_be_attached()
    assert "_alembic_tmp_" in page.locator("#plan .sql-sections").text_content()
    expect(page.locator(".finding.rule-drop_table")).to_have_count(0)
    rebuilds = page.locator(".finding.rule-table_rebuild")
    assert rebuilds.count() >= 1
    for finding in rebuilds.all():
        href = finding.locator("a").get_attribute("href")  # the revision that causes it
        assert re.fullmatch(r"#sql-[0-9a-f]{12}", href), href
        expect(page.locator(href)).to_be_attached()
    expect(page.locator("#decision .lint-count")).not_to_contain_text("table rebuild")


def test_danger_is_visible_at_a_glance(pages, size):
    """Item 5: production banner and card colour, dangerous downgrade/stamp,
    "Request ..." on protected targets (the failed-job banners: see the
    live output test)."""
    page = pages()
    page.goto("/")
    expect(page.locator('article.card.tier-card-production[data-target="demo-production"]')
           ).to_be_visible()
    page.goto("/targets/demo-production")
    expect(page.locator("#tier-banner")).to_contain_text("Production")
    expect(page.locator("#tier-banner")).to_be_in_viewport()
    actions = page.locator("#actions")
    expect(actions.locator("a.button").first).to_have_text(re.compile(r"^Request upgrade to "))
    expect(actions.locator("a.button", has_text=re.compile(r"^(Upgrade|Downgrade)"))
           ).to_have_count(0)

    page.goto("/targets/slow-desktop")  # a staging target at one revision
    expect(page.locator("#tier-banner")).to_have_count(0)
    downgrade = page.locator("#actions a.button", has_text="Downgrade one step")
    expect(downgrade).to_have_class(re.compile(r"\bdanger\b"))
    show = page.locator(".plan-form button[type=submit]")
    expect(show).not_to_have_class(re.compile(r"\bdanger\b"))
    page.locator(".plan-form select[name=command]").select_option("stamp")
    expect(show).to_have_class(re.compile(r"\bdanger\b"))


def test_dead_ends_have_a_way_forward(pages, server, flow, size):
    """Item 6: one step on two revisions, plan changed, unreachable database,
    progress while a plan is computed."""
    page = pages()
    page.goto("/targets/demo-production")  # at both heads since J1: two current revisions
    expect(page.locator("#one-step-note")).to_contain_text("one step")
    # one step per branch instead (issue 20, item 7): both branches are at their
    # heads and production allows no downgrade, so neither has a button
    expect(page.locator("#branch-steps .branch-step")).to_have_count(2)
    expect(page.locator('#branch-steps [data-branch="reporting"]')).to_contain_text(
        "at its head")
    expect(page.locator("#actions a.button", has_text="one step")).to_have_count(0)
    page.goto("/targets/demo-production/plan?command=upgrade&revision=%2B1")
    expect(page.locator("#refused")).to_have_attribute("data-reason", "plan_error")
    expect(page.locator("#plan-heads")).to_have_text("Upgrade to heads")
    fits(page)

    page.goto("/targets/offline")
    expect(page.locator("#actions-disabled")).to_contain_text("unreachable")
    assert page.locator("#actions button[disabled]").count() >= 3
    expect(page.locator("#actions a.button")).to_have_count(0)

    page.goto("/targets/demo-qa")
    shown = page.evaluate("""() => {
        document.querySelector('#actions a[data-busy]').click();
        const banner = document.getElementById('busy');
        return [!banner.hidden, document.getElementById('busy-text').textContent]; }""")
    assert shown[0] and "Computing the plan" in shown[1]
    expect(page).to_have_url(re.compile(r"/plan\?"))
    expect(page.locator("#confirm-plan")).to_be_visible()
    _set_version(server["dbs"]["demo-qa"], "6f1b8c5e3a75")  # someone moved the database
    try:
        page.locator("#confirm-plan").click()
        expect(page.locator("#refused")).to_have_attribute("data-reason", "plan_changed")
        page.locator("#show-new-plan").click()
        expect(page.locator("#decision .from-to")).to_contain_text("6f1b8c5e3a75")
    finally:
        _set_version(server["dbs"]["demo-qa"], QA_START)


def test_live_output_follows_the_tail_and_is_appended(pages, size, artifacts):
    """Item 2 (and 5's failed-job banners): output is appended, followed until
    the reader scrolls up, "Finished" only once finished, polling stops."""
    target = f"slow-{size}"
    page = pages()
    statuses = []
    page.on("response", lambda r: statuses.append(r.status) if "/status?" in r.url else None)
    page.goto(f"/targets/{target}/plan?command=upgrade&revision=head")
    page.locator("#confirm-plan").click()
    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    summary, log = page.locator("#job-summary"), page.locator("#job-log")
    # the URL changes when the navigation commits, before the page is parsed
    expect(page.locator("#job-log .chunk").first).to_be_attached()
    page.evaluate("() => document.querySelector('#job-log .chunk').dataset.first = 'yes'")

    dashboard = pages()
    dashboard.goto("/")
    card = dashboard.locator(f'article.card[data-target="{target}"]')
    expect(card.locator(".running-job")).to_be_visible()

    expect(log).to_contain_text("copying batch 32", timeout=JOB_TIMEOUT_MS)
    expect(summary).to_have_attribute("data-status", "running")
    expect(page.locator(".job-finished")).to_have_count(0)
    expect(page.locator("#job-waiting")).to_contain_text("running")
    follow = page.evaluate("""() => { const el = document.getElementById('job-log');
        return [el.scrollHeight > el.clientHeight,
                el.scrollHeight - el.scrollTop - el.clientHeight,
                document.querySelectorAll('#job-log .chunk').length,
                document.querySelector('#job-log .chunk[data-first]') !== null]; }""")
    overflowing, from_end, chunks, same_first = follow
    assert overflowing and from_end <= 24, follow  # at the newest line
    assert chunks > 1 and same_first, follow  # appended, the first part never replaced
    shoot(page, artifacts, "job-running", size)

    page.evaluate("() => { const el = document.getElementById('job-log'); el.scrollTop = 0; }")
    expect(page.locator("#follow-note")).to_have_attribute("data-follow", "false")
    expect(log).to_contain_text("copying batch 70", timeout=JOB_TIMEOUT_MS)
    assert page.evaluate("() => document.getElementById('job-log').scrollTop") == 0

    expect(summary).to_have_attribute("data-status", "failed", timeout=JOB_TIMEOUT_MS)
    expect(page.locator(".job-finished")).to_be_visible()
    expect(page.locator(".job-error")).to_contain_text("disk full (simulated)")
    expect(page.locator("#follow-note")).to_have_count(0)  # nothing left to follow
    expect(page.locator("#job-poller")).not_to_have_attribute("hx-get", re.compile("."))
    assert statuses and statuses[-1] == 286 and set(statuses[:-1]) <= {200}
    text = log.inner_text()
    assert text.count("copying batch 00 of 80") == 1 and "copying batch 79 of 80" in text
    fits(page)

    expect(card.locator(".last-job-failed")).to_contain_text("failed")  # refreshed by itself
    page.goto(f"/targets/{target}")
    expect(page.locator(".last-job-failed")).to_contain_text("failed")
    expect(page.locator(".last-job-failed")).to_contain_text("s002")


#: the JavaScript of :func:`phone_layout`: rows of the top bar, badges wider
#: than their text, code blocks whose lines are cut off without a scrollbar
PHONE_LAYOUT_JS = """() => {
  const bar = document.querySelector('header.topbar');
  const tops = [...bar.querySelectorAll('a, button, .user > span')]
    .filter(el => el.getClientRects().length)
    .map(el => Math.round(el.getBoundingClientRect().top));
  const rows = [];
  for (const top of tops.sort((a, b) => a - b)) {
    if (!rows.length || top - rows[rows.length - 1] > 8) rows.push(top);
  }
  const stretched = [];
  for (const el of document.querySelectorAll(
      'main .badge, main .state, main .job-status, main .count, main .step-status, '
      + 'main .outcome, main .mark, main .drift')) {
    if (!el.getClientRects().length) continue;
    const range = document.createRange();
    range.selectNodeContents(el);
    const box = el.getBoundingClientRect().width, text = range.getBoundingClientRect().width;
    if (box - text > 32) stretched.push(`${el.className}: ${Math.round(box)} px for `
                                        + `${Math.round(text)} px of text`);
  }
  const cut = [];
  for (const pre of document.querySelectorAll('main pre')) {
    if (!pre.getClientRects().length) continue;
    // where its longest line ends; a scroll box on screen may hold it, a clipping box not
    const end = pre.getBoundingClientRect().left + pre.scrollWidth;
    let el = pre, fine = end <= window.innerWidth + 1;
    while (el && el !== document.body) {
      const style = getComputedStyle(el), right = el.getBoundingClientRect().right;
      if (['auto', 'scroll'].includes(style.overflowX)) {
        fine = right <= window.innerWidth + 1;
        break;
      }
      if (['hidden', 'clip'].includes(style.overflowX) && end > right + 1) { fine = false; break; }
      el = el.parentElement;
    }
    if (!fine) cut.push(pre.textContent.trim().slice(0, 60));
  }
  return {rows: rows.length, height: Math.round(bar.getBoundingClientRect().height),
          width: document.documentElement.scrollWidth, stretched, cut};
}"""


@pytest.mark.parametrize("size", ["phone"])
def test_phone_pass(pages, flow, size, artifacts):
    """Issue 20, item 7, at 390x844: the top bar takes at most two rows, no page
    is wider than the screen, SQL scrolls inside its block instead of being
    cut at the right edge, and badges keep the width of their text."""
    page = pages()
    screens = [
        ("/", "dashboard", "article.card[data-loaded=true]"),
        ("/targets/demo-production", "target", "#actions"),
        ("/targets/demo-qa/history", "history", "table.history"),
        ("/targets/demo-qa/plan?command=upgrade&revision=heads", "plan", "#decision"),
        (f"/requests/{flow['open_request']}", "request", "#review"),
        (f"/jobs/{flow['job']}", "job", "#job-summary"),
        ("/audit", "audit", "table.audit"),
        ("/targets/demo-production/changelog", "changelog", "table.changelog"),
        ("/targets/demo-production/drift/differences", "drift", "main h1"),
    ]
    for url, name, ready in screens:
        page.goto(url)
        expect(page.locator(ready).first).to_be_visible()
        expect(page.locator("main .loading")).to_have_count(0)
        if name == "plan":  # the SQL must be on screen to be measured
            page.get_by_role("button", name="Expand all").click()
        found = page.evaluate(PHONE_LAYOUT_JS)
        page.screenshot(path=str(artifacts / f"phone-{name}.png"), full_page=True)
        assert found["width"] <= 391, (url, found)
        assert found["rows"] <= 2 and found["height"] <= 90, (url, found)
        assert not found["stretched"], (url, found["stretched"])
        assert not found["cut"], (url, found["cut"])
