"""Issue 10, item 6: security headers on every page, a CSP without inline
script or style, and templates that need neither."""

from __future__ import annotations

import re

from pygments.formatters import HtmlFormatter
from support.common import ROOT

from webapp.security import CONTENT_SECURITY_POLICY

SAMPLE = {"name": "demo-staging", "revision": "1f3a9c2e7b10", "job_id": "1",
          "request_id": "1", "user_id": "1", "token_id": "1"}


def _get_urls(app):
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint == "static":
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[^:>]+:)?{arg}>", SAMPLE.get(arg, "x"), url)
        yield url


def test_every_page_carries_the_security_headers(logged_in):
    app = logged_in.application
    urls = list(_get_urls(app)) + ["/login", "/no-such-page"]
    assert len(urls) > 20
    for url in urls:
        response = logged_in.get(url)
        headers = response.headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert headers["X-Frame-Options"] == "DENY", url
        assert headers["X-Content-Type-Options"] == "nosniff", url
        # a one-time password link's page sends no referrer at all (its URL is the secret)
        expected = "no-referrer" if url.startswith("/password/") else "same-origin"
        assert headers["Referrer-Policy"] == expected, url
        assert headers["Cache-Control"] == "no-store", url
        assert "Strict-Transport-Security" not in headers  # development: plain HTTP
    static = logged_in.get("/static/css/app.css")
    assert static.headers["X-Content-Type-Options"] == "nosniff"
    assert static.headers.get("Cache-Control") != "no-store"


def test_csp_allows_no_inline_code_and_only_the_pinned_cdn_file():
    directives = dict(d.split(" ", 1) for d in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["script-src"] == ("'self' "
                                        "https://cdn.jsdelivr.net/npm/htmx.org@2.0.11/dist/htmx.min.js")
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["default-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


def test_hsts_in_production(make_app, monkeypatch):
    monkeypatch.setenv("DASHBOARD_ENV", "production")
    monkeypatch.setenv("DASHBOARD_SECRET_KEY", "p" * 40)
    app = make_app(DASHBOARD_ENV="production")
    response = app.test_client().get("/login")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_templates_have_no_inline_script_style_or_handlers():
    for path in (ROOT / "templates").rglob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"<style", text), path
        assert not re.search(r"\son[a-z]+\s*=", text), path
        assert not re.search(r"\sstyle\s*=", text), path


def test_htmx_is_told_not_to_inject_styles_and_pygments_css_is_current(logged_in):
    page = logged_in.get("/").get_data(as_text=True)
    config = re.search(r'<meta name="htmx-config" content=\'([^\']+)\'', page)
    assert config and '"includeIndicatorStyles": false' in config.group(1)
    css = (ROOT / "static" / "css" / "pygments.css").read_text()
    assert HtmlFormatter(cssclass="highlight").get_style_defs(".highlight") in css
