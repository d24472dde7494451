"""Fixtures for the browser tests: one gunicorn server and one Chromium per session.

Debian's Chromium (``/usr/bin/chromium``) is driven through Playwright's sync
API; ``playwright install`` cannot download browsers here. Without Chromium
the browser tests are skipped, except in CI (``CI=true``) where they fail.

The fixture names deliberately avoid pytest-playwright's (``browser``,
``page``, ``context``, ``playwright`` …): that plugin stays loaded but idle.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import IN_CI, PASSWORD, ROOT, start_gunicorn, stop_gunicorn
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000  # a hang guard for every action and expect(), not a speed target
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> str:
    """A real gunicorn (after ``flask init``) on a free port: its base URL.

    Session-scoped variant of ``gunicorn_server``: the demo databases start at
    their DEMO_START revisions and an ``admin`` account has ``PASSWORD``.
    """
    tmp = tmp_path_factory.mktemp("e2e")
    instance = tmp / "instance"
    instance.mkdir()
    proc, base, _env = start_gunicorn(instance, tmp / "gunicorn.log", secret="e2e-test-secret")
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


class PageProblems:
    """JavaScript errors and failed same-origin requests seen by a page."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.js_errors: list[str] = []
        self.failed: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.js_errors.append(str(exc)))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _same_origin(self, url: str) -> bool:
        return url.startswith(self.base_url)

    def _request_failed(self, request) -> None:
        # net::ERR_ABORTED is the browser dropping a request it no longer
        # needs (the page navigated away: a favicon still loading at logout);
        # what the server answered is checked in _response
        if self._same_origin(request.url) and request.failure != "net::ERR_ABORTED":
            self.failed.append(f"{request.url}: {request.failure}")

    def _response(self, response) -> None:
        # Navigations to a page may answer 4xx on purpose (401 login, 404 page);
        # sub-resources (CSS, vendor JS, htmx fragments) must not.
        if (self._same_origin(response.url) and response.status >= 400
                and response.request.resource_type != "document"):
            self.failed.append(f"{response.url}: HTTP {response.status}")


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


def log_in(page: Page, username: str = "admin", password: str = PASSWORD) -> None:
    """Fill and submit the login form (the page must be on /login)."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


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
