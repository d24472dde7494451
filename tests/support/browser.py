"""Browser-test helpers (``from support.browser import log_in, VIEWPORT``): the
Chromium settings, the watcher of a page's problems and the login form."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Page, expect

from .common import PASSWORD, ROOT

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 15_000  # a hang guard for every action and expect(), not a speed target
expect.set_options(timeout=TIMEOUT_MS)


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


def log_in(page: Page, username: str = "admin", password: str = PASSWORD) -> None:
    """Fill and submit the login form (the page must be on /login)."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()
