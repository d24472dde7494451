"""Browser: a job waiting on a lock shows who blocks it; an admin cancels
that query after confirming, and the job goes on (real gunicorn, PostgreSQL)."""

from __future__ import annotations

import re
import threading

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from support.browser import VIEWPORT, log_in
from support.common import PASSWORD
from support.envtools import Rev, make_env, write_targets_file
from support.locktools import fill_big_table

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]


def test_blocked_by_pane_and_cancel(chromium, gunicorn_server, tmp_path, artifacts, pg_url):
    ini = make_env(tmp_path / "env", [
        Rev("r000", None, "base", upgrade="pass", downgrade="pass"),
        Rev("r001", "r000", "add big.note",
            upgrade='op.add_column("big", sa.Column("note", sa.String(40)))',
            downgrade='op.drop_column("big", "note")')])
    fill_big_table(pg_url, rows=20_000)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-production": {
        "label": "Shop (production)", "tier": "production", "alembic_ini": str(ini),
        "url_env": "E2E_SHOP_URL", "policy": {"lock_timeout": 8, "lock_retries": 1}}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets), "E2E_SHOP_URL": pg_url})
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    report = engine.connect()
    report.execute(sa.text("SET application_name = 'nightly-report'"))
    pid = report.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    cancelled = threading.Event()

    def long_report():
        try:
            report.execute(sa.text("SELECT pg_sleep(40), count(*) FROM big "
                                   "WHERE payload <> 'secret'")).all()
        except sa.exc.DBAPIError:
            cancelled.set()

    threading.Thread(target=long_report, daemon=True).start()
    context = chromium.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto("/targets/shop-production/plan?command=upgrade&revision=head")
        page.locator("#confirm-plan").click()
        expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
        pane = page.locator("#job-blockers")
        expect(pane).to_contain_text("Waiting on a lock held by")
        row = pane.locator(f'tr.blocker[data-pid="{pid}"]')
        expect(row).to_contain_text("nightly-report")
        expect(row).to_contain_text("pg_sleep(40)")
        expect(row).not_to_contain_text("secret")  # string literals are hidden
        page.screenshot(path=str(artifacts / "job-blocked-by.png"), full_page=True)

        asked = []

        def accept(dialog):
            asked.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        row.locator("button.cancel-blocker").click()
        assert cancelled.wait(10)
        assert asked and str(pid) in asked[0]
        status = page.locator("#job-status .job")
        expect(status).to_have_attribute("data-status", "succeeded", timeout=30_000)
        expect(page.locator("#job-blockers")).to_contain_text("Blocked by")
        page.screenshot(path=str(artifacts / "job-blocker-cancelled.png"), full_page=True)
    finally:
        context.close()
        report.invalidate()
        engine.dispose()
