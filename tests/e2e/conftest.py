"""Fixtures for the browser tests: one gunicorn server and one Chromium per session.

Debian's Chromium (``/usr/bin/chromium``) is driven through Playwright's sync
API; ``playwright install`` cannot download browsers here. Without Chromium
the browser tests are skipped, except in CI (``CI=true``) where they fail.

The fixture names deliberately avoid pytest-playwright's (``browser``,
``page``, ``context``, ``playwright`` …): that plugin stays loaded but idle.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from support.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    VIEWPORT,
    PageProblems,
    log_in,
)
from support.common import IN_CI, start_gunicorn, stop_gunicorn


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> str:
    """A real gunicorn (after ``flask init``) on a free port: its base URL.

    Session-scoped variant of ``gunicorn_server``: the demo databases start at
    their DEMO_START revisions and an ``admin`` account has ``PASSWORD``.
    """
    tmp = tmp_path_factory.mktemp("e2e")
    instance = tmp / "instance"
    instance.mkdir()
    proc, base, _env = start_gunicorn(instance, tmp / "gunicorn.log", secret="e2e-test-secret",
                                      standbys=True)  # the product as it ships
    try:
        yield base
    finally:
        stop_gunicorn(proc)


@pytest.fixture(scope="session")
def chromium() -> Browser:
    """Debian's headless Chromium, launched once per session."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``test-artifacts/`` at the project root, for screenshots."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _new_context(browser: Browser, base_url: str, **kwargs) -> BrowserContext:
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT, **kwargs)
    context.set_default_timeout(TIMEOUT_MS)
    return context


@pytest.fixture
def new_page(chromium, live_server):
    """Factory: ``new_page(storage_state=None) -> Page`` in a fresh context.

    After the test, no JavaScript error and no failed same-origin
    sub-request may have happened on any of these pages.
    """
    contexts: list[BrowserContext] = []
    problems = PageProblems(live_server)

    def factory(**kwargs) -> Page:
        context = _new_context(chromium, live_server, **kwargs)
        contexts.append(context)
        page = context.new_page()
        problems.watch(page)
        return page

    yield factory
    for context in contexts:
        context.close()
    assert not problems.js_errors, f"JavaScript errors: {problems.js_errors}"
    assert not problems.failed, f"failed requests: {problems.failed}"


def _admin_login_state(chromium, live_server) -> dict:
    context = _new_context(chromium, live_server)
    try:
        page = context.new_page()
        page.goto("/login")
        log_in(page)
        assert not page.url.endswith("/login"), "admin login failed"
        return context.storage_state()
    finally:
        context.close()


def _still_logged_in(live_server: str, state: dict) -> bool:
    cookies = "; ".join(f"{c['name']}={c['value']}" for c in state["cookies"])
    request = urllib.request.Request(live_server + "/", headers={"Cookie": cookies})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        return opener.open(request, timeout=10).status == 200
    except urllib.error.HTTPError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="session")
def _admin_states() -> list[dict]:
    return []


@pytest.fixture
def admin_state(chromium, live_server, _admin_states) -> dict:
    """Cookies of a session logged in as ``admin`` (a Playwright storage state),
    shared between tests and made again when a test's logout ended every
    admin session (logout is server-side: the user's session version moves)."""
    if not _admin_states or not _still_logged_in(live_server, _admin_states[-1]):
        _admin_states.append(_admin_login_state(chromium, live_server))
    return _admin_states[-1]


@pytest.fixture
def admin_page(new_page, admin_state) -> Page:
    """A page in a context logged in as ``admin``."""
    return new_page(storage_state=admin_state)


@pytest.fixture
def anon_page(new_page) -> Page:
    """A page in a fresh context without any cookie."""
    return new_page()
