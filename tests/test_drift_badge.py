"""The drift badge shows when it was checked as a UTC time, not a Unix time,
and the reason for "unknown" as text next to the badge, not only in its
title (issue 22, item 7)."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime

from support.common import add_user, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file

from webapp.core.runner import run_command

UNIX_TIME = re.compile(r"(?<!\d)\d{10}(?!\d)")


def visible(fragment: str) -> str:
    """The text a reader sees: tags (and so their title attributes) dropped."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", fragment)))


def checked_times(fragment: str) -> list[datetime]:
    return [datetime.strptime(found, "%Y-%m-%d %H:%M").replace(tzinfo=UTC) for found in
            re.findall(r"checked (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", html.unescape(fragment))]


def test_not_at_head_badge_shows_a_utc_time(logged_in):
    before = time.time()
    fragment = logged_in.get("/targets/demo-staging/drift").get_data(as_text=True)
    assert "not at head" in fragment
    assert not UNIX_TIME.search(fragment), fragment
    (checked,) = checked_times(fragment)
    assert before - 120 <= checked.timestamp() <= time.time() + 60
    assert "drift-reason" not in fragment  # a known state: the badge says it all


def test_unknown_badge_shows_its_reason_as_text(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", linear(2))
    url = sqlite_url(tmp_path / "t.db")
    monkeypatch.setenv("DRIFT_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "DRIFT_URL"}}))
    run_command(app.extensions["alembic_dashboard"].get("t"), "upgrade", "head", url=url)
    # at head, so drift runs env.py for the comparison: it exits like a broken script
    (tmp_path / "env" / "env.py").write_text("import sys\nsys.exit(-1)\n")
    add_user(app, "vic", "viewer")
    client = app.test_client()
    login(client, "vic")
    fragment = client.get("/targets/t/drift").get_data(as_text=True)
    assert "drift-unknown" in fragment and ">unknown<" in fragment
    assert "SystemExit: -1" in visible(fragment), fragment
    assert not UNIX_TIME.search(fragment), fragment
    assert len(checked_times(fragment)) == 1
