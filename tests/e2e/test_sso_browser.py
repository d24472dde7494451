"""Browser: sign in through the real OpenID Connect provider; per-target
grants from the provider's groups decide what the dashboard shows."""

from __future__ import annotations

import re

import pytest
import support.idp as idp_tools
from playwright.sync_api import expect
from support.browser import VIEWPORT
from support.common import free_port
from support.envtools import linear, make_env, sqlite_url, write_targets_file

pytestmark = pytest.mark.browser


def test_sign_in_with_the_identity_provider_and_see_only_granted_targets(
        chromium, gunicorn_server, tmp_path, artifacts):
    port = free_port()
    provider = idp_tools.start([f"http://127.0.0.1:{port}/login/oidc/callback"],
                               tmp_path / "idp.log")
    try:
        ini = make_env(tmp_path / "env", linear(2))
        path = write_targets_file(tmp_path / "targets.toml", {
            "shop-staging": {"tier": "staging", "alembic_ini": str(ini),
                             "url_env": "E2E_STAGING_URL"},
            "shop-prod": {"tier": "production", "alembic_ini": str(ini),
                          "url_env": "E2E_PROD_URL",
                          "policy": {"approvals_required": 1, "approvers": ["group:dba"]}}})
        with open(path, "a") as f:
            f.write('\n[tiers.staging.policy]\noperators = ["group:devs"]\n')
        base = gunicorn_server({**provider.environment(), "DASHBOARD_OIDC_ROLE_MAP": "ops=admin",
                                "DASHBOARD_TARGETS": str(path),
                                "E2E_STAGING_URL": sqlite_url(tmp_path / "staging.db"),
                                "E2E_PROD_URL": sqlite_url(tmp_path / "prod.db")}, port=port)
        context = chromium.new_context(base_url=base, viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.set_default_timeout(20_000)
            page.goto("/targets/shop-staging")
            expect(page).to_have_url(re.compile(r"/login"))
            page.get_by_role("link", name="Sign in with Test IdP").click()
            expect(page).to_have_url(re.compile(re.escape(provider.issuer) + "/interaction/"))
            page.fill("#idp-login", "bob")
            page.fill("#idp-password", idp_tools.USERS["bob"])
            page.screenshot(path=str(artifacts / "sso-provider-login.png"))
            page.get_by_role("button", name="Sign in").click()
            # back at the page first asked for, as bob (group devs: operator on staging)
            expect(page).to_have_url(f"{base}/targets/shop-staging")
            expect(page.locator(".topbar .user")).to_contain_text("bob")
            expect(page.locator("#actions")).to_be_visible()
            page.goto("/")
            expect(page.locator("article.card")).to_have_count(1)
            expect(page.locator("#card-shop-staging")).to_be_visible()
            page.screenshot(path=str(artifacts / "sso-dashboard.png"), full_page=True)
            # a target without a grant answers like one that does not exist (names stay hidden)
            assert page.goto("/targets/shop-prod").status == 404
        finally:
            context.close()
    finally:
        provider.stop()
