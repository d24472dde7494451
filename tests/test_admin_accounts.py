"""Accounts in the browser (admin role): invite a person (a link to choose a
password), reset a password, create a service account and API tokens with
an expiry and a role ceiling; refusals are 4xx that change nothing; all
audited, never with a link or a token in the log."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from support.common import PASSWORD, add_user, csrf_from, login

from webapp.extensions import db
from webapp.models import ApiToken, AuditEvent, User, utcnow
from webapp.services import accounts

NEW_PASSWORD = "tangerine lamp oboe"


def shown_once(html: str) -> str:
    """The link or token of a shown-once page."""
    match = re.search(r'id="secret"[^>]*value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def events(app, action: str) -> list[tuple[str | None, str, dict]]:
    with app.app_context():
        rows = db.session.execute(db.select(AuditEvent).filter_by(action=action)
                                  .order_by(AuditEvent.id)).scalars()
        return [(e.username, e.outcome, json.loads(e.details)) for e in rows]


def audit_text(app) -> str:
    with app.app_context():
        return " ".join(e.details for e in db.session.execute(db.select(AuditEvent)).scalars())


@pytest.fixture
def admin(logged_in):
    """The logged-in admin client and a CSRF token of its session."""
    return logged_in, csrf_from(logged_in.get("/admin/users").get_data(as_text=True))


def user_row(app, name: str) -> User | None:
    with app.app_context():
        user = accounts.get_user(name)
        if user is not None:
            db.session.expunge(user)
        return user


def test_invite_a_person_who_chooses_a_password_through_the_link(demo_app, admin):
    client, csrf = admin
    made = client.post("/admin/users", data={"csrf_token": csrf, "username": "dana",
                                              "role": "operator", "kind": "person"})
    assert made.status_code == 200 and "shown only once" in made.get_data(as_text=True)
    link = shown_once(made.get_data(as_text=True))
    assert "/password/" in link
    path = link.split("://", 1)[1].split("/", 1)[1]
    assert user_row(demo_app, "dana").role == "operator"
    assert login(demo_app.test_client(), "dana", "").status_code in (400, 401)

    person = demo_app.test_client()
    form = person.get(f"/{path}")
    assert form.status_code == 200 and "dana" in form.get_data(as_text=True)
    assert form.headers["Referrer-Policy"] == "no-referrer"
    csrf_p = csrf_from(form.get_data(as_text=True))
    differ = person.post(f"/{path}", data={"csrf_token": csrf_p, "password": NEW_PASSWORD,
                                           "confirm": NEW_PASSWORD + "x"})
    assert differ.status_code == 400 and "differ" in differ.get_data(as_text=True)
    weak = person.post(f"/{path}", data={"csrf_token": csrf_p, "password": "password",
                                         "confirm": "password"})
    assert weak.status_code == 400 and "common" in weak.get_data(as_text=True)
    assert person.post(f"/{path}", data={"password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD}).status_code == 400  # CSRF
    assert user_row(demo_app, "dana").password_hash == ""  # nothing changed so far
    done = person.post(f"/{path}", data={"csrf_token": csrf_p, "password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["Location"].endswith("/login")
    assert login(demo_app.test_client(), "dana", NEW_PASSWORD).status_code == 302
    again = demo_app.test_client().get(f"/{path}")  # a link works once
    assert again.status_code == 404 and "Ask an admin" in again.get_data(as_text=True)

    assert ("alice", "ok", {"user": "dana", "role": "operator", "kind": "person"}) in \
        events(demo_app, "account.create")
    assert [(u, o) for u, o, _ in events(demo_app, "account.password_set")] == \
        [(None, "denied"), (None, "denied"), ("dana", "ok"), (None, "denied")]
    assert path.rsplit("/", 1)[1] not in audit_text(demo_app)


@pytest.mark.parametrize("form, message", [
    ({"username": "bad name", "role": "viewer"}, "username"),
    ({"username": "alice", "role": "viewer"}, "already exists"),
    ({"username": "eve", "role": "superuser"}, "role must be one of"),
    ({"username": "eve", "role": "viewer", "kind": "robot"}, "kind must be"),
    ({"username": "e" * 65, "role": "viewer"}, "username"),
])
def test_a_bad_new_account_is_a_400_that_creates_nothing(demo_app, admin, form, message):
    client, csrf = admin
    answer = client.post("/admin/users", data={"csrf_token": csrf, **form})
    assert answer.status_code == 400 and message in answer.get_data(as_text=True)
    with demo_app.app_context():
        assert accounts.user_count() == 1
    assert events(demo_app, "account.create")[-1][1] == "denied"


def test_only_an_admin_with_csrf_creates_accounts_and_tokens(demo_app, admin):
    client, csrf = admin
    add_user(demo_app, "vic", "approver")
    vic = demo_app.test_client()
    login(vic, "vic")
    vic_csrf = csrf_from(vic.get("/").get_data(as_text=True))
    vic_id = user_row(demo_app, "vic").id
    assert vic.post("/admin/users", data={"csrf_token": vic_csrf, "username": "x",
                                          "role": "admin"}).status_code == 403
    assert vic.post(f"/admin/users/{vic_id}/tokens", data={
        "csrf_token": vic_csrf, "name": "mine", "expires_days": "30"}).status_code == 403
    assert vic.post(f"/admin/users/{vic_id}/password-link",
                    data={"csrf_token": vic_csrf}).status_code == 403
    assert client.post("/admin/users", data={"username": "x", "role": "viewer"}
                       ).status_code == 400  # no CSRF token
    assert client.post("/admin/users/999999/tokens", data={
        "csrf_token": csrf, "name": "t", "expires_days": "3"}).status_code == 404
    with demo_app.app_context():
        assert accounts.user_count() == 2
        assert db.session.execute(db.select(db.func.count(ApiToken.id))).scalar_one() == 0


def test_reset_ends_the_password_and_sessions_and_gives_one_working_link(demo_app, admin):
    client, csrf = admin
    add_user(demo_app, "bob", "operator")
    bob = demo_app.test_client()
    assert login(bob, "bob").status_code == 302
    bob_id = user_row(demo_app, "bob").id
    first = shown_once(client.post(f"/admin/users/{bob_id}/password-link",
                                   data={"csrf_token": csrf}).get_data(as_text=True))
    assert bob.get("/").status_code == 302  # the session ended
    assert login(demo_app.test_client(), "bob", PASSWORD).status_code == 401
    second = shown_once(client.post(f"/admin/users/{bob_id}/password-link",
                                    data={"csrf_token": csrf}).get_data(as_text=True))
    first_path, second_path = (s.split("://", 1)[1].split("/", 1)[1] for s in (first, second))
    assert demo_app.test_client().get(f"/{first_path}").status_code == 404  # replaced
    with demo_app.app_context():
        row = accounts.get_user("bob")
        row.password_link_expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert demo_app.test_client().get(f"/{second_path}").status_code == 404  # expired
    third = shown_once(client.post(f"/admin/users/{bob_id}/password-link",
                                   data={"csrf_token": csrf}).get_data(as_text=True))
    path = third.split("://", 1)[1].split("/", 1)[1]
    person = demo_app.test_client()
    csrf_p = csrf_from(person.get(f"/{path}").get_data(as_text=True))
    assert person.post(f"/{path}", data={"csrf_token": csrf_p, "password": NEW_PASSWORD,
                                         "confirm": NEW_PASSWORD}).status_code == 303
    assert login(demo_app.test_client(), "bob", NEW_PASSWORD).status_code == 302
    assert [o for _, o, _ in events(demo_app, "account.reset")] == ["ok", "ok", "ok"]


def test_service_account_with_tokens_that_expire_and_have_a_role_ceiling(demo_app, admin):
    client, csrf = admin
    made = client.post("/admin/users", data={"csrf_token": csrf, "username": "deploy",
                                              "role": "operator", "kind": "service"})
    assert made.status_code == 303
    deploy = user_row(demo_app, "deploy")
    assert deploy.is_service and deploy.password_hash == ""
    assert login(demo_app.test_client(), "deploy", PASSWORD).status_code == 401
    refused = client.post(f"/admin/users/{deploy.id}/password-link", data={"csrf_token": csrf})
    assert refused.status_code == 400 and "service account" in refused.get_data(as_text=True)

    for form, message in [({"name": "t", "expires_days": "0"}, "1 to 365 days"),
                          ({"name": "t", "expires_days": "400"}, "1 to 365 days"),
                          ({"name": "t", "expires_days": "soon"}, "whole number"),
                          ({"name": "", "expires_days": "3"}, "1-100 characters"),
                          ({"name": "t", "expires_days": "3", "role_ceiling": "root"},
                           "role ceiling must be one of")]:
        answer = client.post(f"/admin/users/{deploy.id}/tokens", data={"csrf_token": csrf,
                                                                       **form})
        assert answer.status_code == 400 and message in answer.get_data(as_text=True), form
    with demo_app.app_context():
        assert db.session.execute(db.select(db.func.count(ApiToken.id))).scalar_one() == 0

    def new_token(**form) -> dict:
        page = client.post(f"/admin/users/{deploy.id}/tokens",
                           data={"csrf_token": csrf, "expires_days": "30", **form})
        assert page.status_code == 200, page.get_data(as_text=True)
        return {"Authorization": "Bearer " + shown_once(page.get_data(as_text=True))}

    capped, full = new_token(name="read only", role_ceiling="viewer"), new_token(name="deploy")
    api = demo_app.test_client()
    job = {"command": "upgrade", "revision": "no-such-revision"}
    assert api.get("/api/v1/targets", headers=capped).status_code == 200
    answer = api.post("/api/v1/targets/demo-staging/jobs", headers=capped, json=job)
    assert answer.status_code == 403 and "operator role" in answer.json["detail"]
    # the same account without a ceiling passes the role check (and stops at the revision)
    answer = api.post("/api/v1/targets/demo-staging/jobs", headers=full, json=job)
    assert answer.status_code == 400 and answer.json["error"] == "bad_input", answer.json

    page = client.get("/admin/users").get_data(as_text=True)
    assert "at most viewer" in page and "service account" in page and "expires 20" in page
    with demo_app.app_context():
        rows = {t.name: t for t in accounts.get_user("deploy").tokens}
        assert rows["deploy"].role_ceiling is None
        lifetime = rows["deploy"].expires_at - utcnow()
        assert timedelta(days=29, hours=23) < lifetime <= timedelta(days=30)
        rows["deploy"].expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert api.get("/api/v1/targets", headers=full).status_code == 401  # expired
    assert "expired 20" in client.get("/admin/users").get_data(as_text=True)

    created = events(demo_app, "token.create")
    assert [(u, o) for u, o, _ in created][-2:] == [("alice", "ok"), ("alice", "ok")]
    assert created[-2][2]["role_ceiling"] == "viewer" and created[-1][2]["name"] == "deploy"
    text = audit_text(demo_app)
    assert not any(h["Authorization"][7:] in text for h in (capped, full))


def test_cli_token_expiry_and_ceiling(demo_app):
    add_user(demo_app, "ci", "operator")
    runner = demo_app.test_cli_runner()
    assert runner.invoke(args=["create-token", "ci", "--expires-days", "0"]).exit_code != 0
    result = runner.invoke(args=["create-token", "ci", "--expires-days", "7",
                                 "--role-ceiling", "viewer"])
    assert result.exit_code == 0, result.output
    with demo_app.app_context():
        row = accounts.get_user("ci").tokens[0]
        assert row.role_ceiling == "viewer"
        assert timedelta(days=6) < row.expires_at - utcnow() <= timedelta(days=7)
