"""Revision files without a ``downgrade()`` function (issue 22, item 2).

Some real projects write only ``upgrade()``. Alembic then fails with
``AttributeError: module ... has no attribute 'downgrade'`` when a downgrade
reaches such a revision. The dashboard reads which revisions have one from
their source, offers only downgrades that can run, and refuses the others
before any process starts, naming the revision(s).
"""

from __future__ import annotations

import html as html_lib
import re

from support.common import add_user, login
from support.envtools import linear, make_env, revision_source, sqlite_url, write_targets_file
from support.jobtools import token_headers, version_table, wait_job

from webapp.core.history import parse_revision_source
from webapp.extensions import db
from webapp.models import Job


def _without_downgrade(source: str) -> str:
    """The revision source with its ``def downgrade`` block cut off (it is last)."""
    head, _, _ = source.partition("\n\ndef downgrade()")
    return head.rstrip() + "\n"


def _env_without_downgrade(root):
    """r000 <- r001 <- r002 <- r003 where r002's file has no downgrade()."""
    revs = linear(4)
    ini = make_env(root, revs)
    path = root / "versions" / "r002_rev.py"
    path.write_text(_without_downgrade(revision_source(revs[2])))
    assert "def downgrade" not in path.read_text()
    return ini


def _app(make_app, tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "nd.db")
    monkeypatch.setenv("ND_URL", url)
    ini = _env_without_downgrade(tmp_path / "e")
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "ND_URL"}}))
    return app, url


def _downgrade_choices(page: str, current: str, order: list[str]) -> set[str]:
    """Every revision the page offers to downgrade to: one-step links (``-1``
    resolved against ``order``, oldest first) and form selects whose command
    can be downgrade (each revision option of that form)."""
    page = html_lib.unescape(page)
    offered = set()
    for target in re.findall(r"command=downgrade&revision=([\w+-]+)", page):
        offered.add(order[order.index(current) - 1] if target == "-1" else target)
    for form in re.findall(r"<form\b.*?</form>", page, re.S):
        if 'value="downgrade"' not in form:
            continue
        revision_select = re.search(r'<select name="revision".*?</select>', form, re.S)
        if revision_select:
            offered.update(re.findall(r'<option value="([\w+-]+)"', revision_select.group(0)))
    return offered


def test_has_downgrade_is_read_from_the_source(tmp_path):
    _env_without_downgrade(tmp_path / "e")
    assert parse_revision_source(tmp_path / "e" / "versions" / "r002_rev.py").has_downgrade \
        is False
    assert parse_revision_source(tmp_path / "e" / "versions" / "r003_rev.py").has_downgrade \
        is True


def test_no_downgrade_across_a_revision_without_one(make_app, tmp_path, monkeypatch):
    app, url = _app(make_app, tmp_path, monkeypatch)
    add_user(app, "olga", "admin")
    headers = token_headers(app, "pipeline", "admin")
    client = app.test_client()
    up = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                        "revision": "head"}, headers=headers)
    assert up.status_code == 202, up.json
    assert wait_job(client, up.json["job"], headers)["status"] == "succeeded"
    assert version_table(url) == {"r003"}
    order = ["base", "r000", "r001", "r002", "r003"]

    login(client, "olga")
    page = client.get("/targets/shop").get_data(as_text=True)
    # From r003 only r002 can be reached: r002's own downgrade() is missing.
    assert _downgrade_choices(page, "r003", order) == {"r002"}
    assert "r002" in page and "no downgrade()" in page
    revision_page = client.get("/targets/shop/revisions/r002").get_data(as_text=True)
    assert "this revision has no downgrade()" in revision_page
    api_history = client.get("/api/v1/targets/shop/history", headers=headers).json
    assert {r["revision"]: r["has_downgrade"] for r in api_history} == {
        "r003": True, "r002": False, "r001": True, "r000": True}

    with app.app_context():
        jobs_before = db.session.query(Job).count()
    for revision in ("r001", "base", "r000"):
        refused = client.post("/api/v1/targets/shop/jobs", json={
            "command": "downgrade", "revision": revision}, headers=headers)
        assert 400 <= refused.status_code < 500, refused.json
        message = refused.json["detail"]
        assert "r002" in message and "no downgrade()" in message, message
        assert "AttributeError" not in message and "Traceback" not in message
        plan_page = client.get("/targets/shop/plan", query_string={
            "command": "downgrade", "revision": revision})
        text = plan_page.get_data(as_text=True)
        assert 400 <= plan_page.status_code < 500
        assert "r002" in text and "no downgrade()" in text and "AttributeError" not in text
    with app.app_context():
        assert db.session.query(Job).count() == jobs_before  # nothing was started
    assert version_table(url) == {"r003"}

    # One step down runs r003's downgrade(): allowed, and it runs.
    step = client.post("/api/v1/targets/shop/jobs", json={"command": "downgrade",
                                                          "revision": "-1"}, headers=headers)
    assert step.status_code == 202, step.json
    assert wait_job(client, step.json["job"], headers)["status"] == "succeeded"
    assert version_table(url) == {"r002"}

    # At r002 no downgrade at all is possible: none offered, -1 refused.
    page = client.get("/targets/shop").get_data(as_text=True)
    assert _downgrade_choices(page, "r002", order) == set()
    refused = client.post("/api/v1/targets/shop/jobs", json={"command": "downgrade",
                                                             "revision": "-1"}, headers=headers)
    assert 400 <= refused.status_code < 500 and "r002" in refused.json["detail"]
    assert "no downgrade()" in refused.json["detail"]
    assert version_table(url) == {"r002"}
