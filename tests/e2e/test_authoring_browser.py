"""Browser: autogenerate preview with a flagged destructive change, then
write the revision and land on its page."""

from __future__ import annotations

import re
import shutil

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from playwright.sync_api import expect
from support.browser import VIEWPORT, log_in
from support.common import PASSWORD
from support.envtools import sqlite_url, write_targets_file

from webapp.core.demo import DEMO_TARGETS_FILE

pytestmark = pytest.mark.browser


def test_preview_flags_destructive_change_then_write_revision(chromium, gunicorn_server,
                                                               tmp_path, artifacts):
    root = tmp_path / "demo"
    shutil.copytree(DEMO_TARGETS_FILE.parent / "demo", root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    url = sqlite_url(tmp_path / 'shop.db')
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "heads")
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a table the models no longer have: autogenerate drops it
        conn.execute(sa.text("CREATE TABLE legacy_notes (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    models = root / "demo_models.py"
    models.write_text(models.read_text().replace(
        "gender: Mapped[str | None] = mapped_column(String(1), nullable=True)",
        "gender: Mapped[str | None] = mapped_column(String(1), nullable=True)\n"
        "    nickname: Mapped[str | None] = mapped_column(String(50), nullable=True)"))
    targets = write_targets_file(tmp_path / "targets.toml", {"shop-staging": {
        "label": "Shop (staging)", "tier": "staging", "alembic_ini": str(root / "alembic.ini"),
        "url_env": "E2E_AUTHOR_URL", "policy": {"allow_revision_authoring": True}}})
    base = gunicorn_server({"DASHBOARD_TARGETS": str(targets), "E2E_AUTHOR_URL": url})
    context = chromium.new_context(base_url=base, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto("/login")
        log_in(page, "admin", PASSWORD)
        page.goto("/targets/shop-staging")
        page.get_by_role("link", name="Autogenerate preview").click()
        destructive = page.locator(".change.destructive")
        expect(destructive).to_contain_text("drop table legacy_notes")
        expect(page.locator(".changes")).to_contain_text("add column users.nickname")
        expect(page.locator(".upgrade-body")).to_contain_text("op.drop_table('legacy_notes')")
        page.screenshot(path=str(artifacts / "preview.png"), full_page=True)
        page.fill("#message", "nickname, drop legacy notes")
        page.select_option("select[name=head]", "c27b4cbe9a0d")
        page.locator("#write-revision").click()
        expect(page).to_have_url(re.compile(r"/targets/shop-staging/revisions/\w+$"))
        expect(page.locator("h2.revtitle")).to_contain_text("nickname, drop legacy notes")
        expect(page.locator(".source")).to_contain_text("op.drop_table")
        page.screenshot(path=str(artifacts / "new-revision.png"), full_page=True)
    finally:
        context.close()
