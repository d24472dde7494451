"""Browser: a revision fails half-way on SQLite; the job page's "What now"
shows its statement journal beside the live schema, with the resume and
compensation steps (real gunicorn), at desktop and phone width; then, the
cause fixed, the recommended resume runs as a job from its plan."""

from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect
from support.browser import VIEWPORT, log_in
from support.common import PASSWORD
from support.envtools import Rev, make_env, sqlite_url, write_targets_file

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

HALF = ('op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True)); '
        'op.add_column("orders", sa.Column("note", sa.String(40))); '
        'op.create_index("ix_orders_note", "orders", ["note"]); '
        'op.execute("INSERT INTO missing_table VALUES (1)"); '
        'op.create_table("refunds", sa.Column("id", sa.Integer, primary_key=True))')


def test_half_applied_revision_journal(chromium, gunicorn_server, tmp_path, artifacts):
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000", "orders",
                                                            upgrade=HALF)])
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-staging": {
        "label": "Shop (staging)", "tier": "staging", "alembic_ini": str(ini),
        "url_env": "E2E_SHOP_URL"}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets),
                            "E2E_SHOP_URL": sqlite_url(tmp_path / "shop.db")})
    context = chromium.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto("/targets/shop-staging/plan?command=upgrade&revision=head")
        page.locator("#confirm-plan").click()
        expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
        expect(page.locator("#job-status .job")).to_have_attribute("data-status", "failed",
                                                                   timeout=30_000)
        page.reload()  # the journal is read with the live schema when the page is shown
        panel = page.locator("#job-journal")
        expect(panel).to_have_attribute("data-agrees", "true")
        expect(panel.locator("#journal-agrees")).to_contain_text("Statements 1–3 ran.")
        expect(panel.locator("tr.statement-finished")).to_have_count(3)
        expect(panel.locator("tr.statement-running")).to_contain_text("missing_table")
        expect(panel.locator("tr.statement-not_run")).to_contain_text("CREATE TABLE refunds")
        recovery = page.locator("#job-recovery")  # what now: one recommended step, then others
        expect(recovery).to_have_attribute("data-recommended", "resume")
        expect(recovery.locator("#recovery-state")).to_contain_text("partly applied")
        expect(recovery.locator("#journal-compensate")).to_contain_text("DROP TABLE orders")
        expect(recovery.locator("#journal-resume")).to_contain_text("CREATE TABLE refunds")
        page.screenshot(path=str(artifacts / "job-journal.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        expect(panel).to_be_visible()
        page.screenshot(path=str(artifacts / "job-journal-phone.png"), full_page=True)
        page.set_viewport_size(VIEWPORT)
        # the cause is fixed (the missing table exists now): resume as a job, from its plan
        with sqlite3.connect(tmp_path / "shop.db") as conn:
            conn.execute("CREATE TABLE missing_table (id INTEGER)")
        conn.close()
        failed_url = page.url
        page.locator("#plan-resume").click()
        expect(page.locator(".resume-badge")).to_contain_text("resume of job #")
        expect(page.locator(".plan-warning").first).to_contain_text(
            "statement(s) 1, 2, 3 of r001 took effect")
        page.screenshot(path=str(artifacts / "resume-plan.png"), full_page=True)
        page.locator("#confirm-plan").click()
        expect(page).not_to_have_url(failed_url)
        expect(page.locator("#job-status .job")).to_have_attribute("data-status", "succeeded",
                                                                   timeout=30_000)
    finally:
        context.close()
