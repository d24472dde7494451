"""Browser: the plan page's blast-radius forecast on PostgreSQL at 1440x900 —
rows and size of a real 20,000-row table, the lock per statement, the worst
line in the decision bar, a session idle in a transaction named as the one
the ALTER would wait for — then rehearsed, with no line marked wrong
(screenshot test-artifacts/forecast-1440.png)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect
from support.browser import log_in
from support.common import PASSWORD
from support.envtools import Rev, make_env, write_targets_file
from support.locktools import fill_big_table

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

PLAN = "/targets/shop-staging/plan?command=upgrade&revision=heads"


def test_forecast_on_the_plan_page(chromium, gunicorn_server, tmp_path, artifacts, pg_url):
    ini = make_env(tmp_path / "env", [
        Rev("r000", None, "base", upgrade="pass", downgrade="pass"),
        Rev("r001", "r000", "add big.note", upgrade='op.add_column("big", sa.Column('
            '"note", sa.String(40), server_default="x"))'),
        Rev("r002", "r001", "index payload",
            upgrade='op.create_index("ix_big_payload", "big", ["payload"])'),
        Rev("r003", "r002", "payload not null", upgrade='op.alter_column("big", "payload", '
            'existing_type=sa.Text(), nullable=False)')])
    fill_big_table(pg_url, rows=20_000)
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE big"))
        conn.commit()
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-staging": {
        "label": "Shop (staging)", "tier": "staging", "alembic_ini": str(ini),
        "url_env": "E2E_SHOP_URL"}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets), "E2E_SHOP_URL": pg_url})
    report = engine.connect()
    report.execute(sa.text("SET application_name = 'nightly-report'"))
    pid = report.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    report.execute(sa.text("SELECT count(*) FROM big"))  # now idle in transaction
    context = chromium.new_context(base_url=base, viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto(PLAN)
        forecast = page.locator("#forecast")
        lines = forecast.locator("tr.forecast-line")
        expect(lines).to_have_count(3)
        expect(lines.nth(0)).to_contain_text("ACCESS EXCLUSIVE")
        expect(lines.nth(0)).to_contain_text("20,000")
        expect(lines.nth(1)).to_contain_text("SHARE")
        expect(lines.nth(1)).to_contain_text("writes")
        expect(lines.nth(2)).to_contain_text("scan")
        expect(lines.nth(0).locator(".forecast-blockers")).to_contain_text(f"pid {pid}")
        page.locator("#rehearse").click()
        expect(page.locator("#rehearsal-result")).to_contain_text("Rehearsed OK on",
                                                                  timeout=30_000)
        expect(page.locator("#forecast .forecast-wrong")).to_have_count(0)
        page.evaluate("window.scrollTo(0, 0)")  # the sticky decision bar in its place
        page.screenshot(path=str(artifacts / "forecast-1440.png"), full_page=True)
    finally:
        context.close()
        report.rollback()
        report.close()
        engine.dispose()
