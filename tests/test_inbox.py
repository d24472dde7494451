"""The approver's inbox (issue 20, item 1, and the reject rules of item 2):
what waits for *me* on the nav, the dashboard, the target card and in
``GET /api/v1/requests?awaiting=me``; the eligible approvers named on the
request; a rejection needs a reason, is confirmed and reads "rejected"."""

from __future__ import annotations

import re

from support.common import add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers


def inbox_app(make_app, tmp_path, monkeypatch):
    """Targets ``prod`` (protected, 1 approval) and ``prod-eu`` (protected;
    ``erin`` is its approver by a per-target grant); ``olga`` operates,
    ``anna`` approves everywhere, ``vic`` only views."""
    ini = make_env(tmp_path / "env", linear(3))
    spec = {}
    for name in ("prod", "prod-eu"):
        var = name.upper().replace("-", "_") + "_URL"
        monkeypatch.setenv(var, sqlite_url(tmp_path / f"{name}.db"))
        spec[name] = {"tier": "production", "alembic_ini": str(ini), "url_env": var,
                      "policy": {"approvals_required": 1, "run_on_approval": True}}
    spec["prod-eu"]["policy"]["approvers"] = ["user:erin"]
    app = make_app(write_targets_file(tmp_path / "targets.toml", spec))
    heads = {"olga": token_headers(app, "olga", "operator"),
             "anna": token_headers(app, "anna", "approver"),
             "vic": token_headers(app, "vic", "viewer"),
             "erin": token_headers(app, "erin", "viewer")}
    return app, heads


def request_on(client, headers, target: str, reason: str = "release 7") -> int:
    posted = client.post(f"/api/v1/targets/{target}/jobs", headers=headers,
                         json={"command": "upgrade", "revision": "head", "reason": reason})
    assert posted.status_code == 202, posted.json
    return posted.json["request"]


def awaiting(client, headers) -> list[int]:
    answer = client.get("/api/v1/requests?awaiting=me", headers=headers)
    assert answer.status_code == 200, answer.json
    return [r["id"] for r in answer.json]


def test_awaiting_me_lists_what_each_user_may_decide(make_app, tmp_path, monkeypatch):
    app, h = inbox_app(make_app, tmp_path, monkeypatch)
    client = app.test_client()
    first = request_on(client, h["olga"], "prod")
    second = request_on(client, h["olga"], "prod-eu")
    assert awaiting(client, h["anna"]) == [second, first]  # newest first
    assert awaiting(client, h["erin"]) == [second]  # approver on prod-eu only, by a grant
    assert awaiting(client, h["olga"]) == []  # never one's own request
    assert awaiting(client, h["vic"]) == []  # a viewer decides nothing
    # once anna decided, it no longer waits for her (nor, being executed, for erin)
    decided = client.post(f"/api/v1/requests/{second}/approve", headers=h["anna"],
                          json={"comment": "ok"})
    assert decided.status_code == 200, decided.json
    assert awaiting(client, h["anna"]) == [first]
    assert awaiting(client, h["erin"]) == []
    bad = client.get("/api/v1/requests?awaiting=everyone", headers=h["anna"])
    assert bad.status_code == 400 and "awaiting must be me" in bad.json["detail"]


def test_the_nav_dashboard_and_card_show_what_awaits_me(make_app, tmp_path, monkeypatch):
    app, h = inbox_app(make_app, tmp_path, monkeypatch)
    client = app.test_client()
    first = request_on(client, h["olga"], "prod", reason="reporting tables")
    request_on(client, h["olga"], "prod-eu")
    anna = app.test_client()
    login(anna, "anna")
    page = anna.get("/").get_data(as_text=True)
    nav = re.search(r'<a [^>]*id="nav-requests"[^>]*>(.*?)</a>', page, re.S).group(1)
    assert re.search(r'class="count"[^>]*>2<', nav), nav
    strip = re.search(r'id="awaiting-you".*?</section>', page, re.S).group(0)
    assert "2 requests await your approval" in strip
    assert f'href="/requests/{first}"' in strip and "reporting tables" in strip
    card = anna.get("/targets/prod/card").get_data(as_text=True)
    assert "1 request awaits your approval" in card and f'href="/requests/{first}"' in card
    # the requester sees no count and no strip
    olga = app.test_client()
    login(olga, "olga")
    page = olga.get("/").get_data(as_text=True)
    assert 'class="count"' not in page and 'id="awaiting-you"' not in page
    assert "awaits your approval" not in olga.get("/targets/prod/card").get_data(as_text=True)


def test_the_request_page_names_who_can_approve(make_app, tmp_path, monkeypatch):
    app, h = inbox_app(make_app, tmp_path, monkeypatch)
    add_user(app, "root", "admin")
    client = app.test_client()
    request_id = request_on(client, h["olga"], "prod-eu")
    olga = app.test_client()
    login(olga, "olga")
    page = olga.get(f"/requests/{request_id}").get_data(as_text=True)
    named = re.search(r'id="eligible-approvers">(.*?)</span>', page, re.S).group(1)
    assert "can approve: anna, erin, root" in named  # never olga, never vic


def test_a_rejection_needs_a_reason_and_reads_rejected(make_app, tmp_path, monkeypatch):
    app, h = inbox_app(make_app, tmp_path, monkeypatch)
    client = app.test_client()
    request_id = request_on(client, h["olga"], "prod")
    for body in ({}, {"comment": "   "}):
        refused = client.post(f"/api/v1/requests/{request_id}/reject", headers=h["anna"],
                              json=body)
        assert refused.status_code == 400 and "Give a reason to reject" in \
            refused.json["detail"], refused.json
    assert awaiting(client, h["anna"]) == [request_id]  # nothing changed
    anna = app.test_client()
    login(anna, "anna")
    page = anna.get(f"/requests/{request_id}").get_data(as_text=True)
    assert re.search(r'id="reject"[^>]*\s+data-confirm="Reject request', page), page
    form = anna.post(f"/requests/{request_id}/reject",
                     data={"csrf_token": csrf_from(page), "comment": ""})
    assert form.status_code == 400 and "Give a reason to reject" in form.get_data(as_text=True)
    done = anna.post(f"/requests/{request_id}/reject", follow_redirects=True,
                     data={"csrf_token": csrf_from(page), "comment": "drops a column we read"})
    assert done.status_code == 200
    text = done.get_data(as_text=True)
    assert "anna</strong> rejected" in text and "rejectd" not in text
    assert "drops a column we read" in text
