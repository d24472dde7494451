"""Notifications of requests (issue 20, item 1): the webhook names the
eligible approvers; optional mails through SMTP (a real SMTP server in
this process, aiosmtpd) to the approvers with an address when a request is
created or gets a new plan, and to the requester when changes are
requested; a dead mail server never slows or fails a request and is
audited without the SMTP password; admins set the addresses."""

from __future__ import annotations

import json
import socket
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from support.common import add_user, csrf_from, free_port, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers

from webapp.config import ConfigurationError, EnvironmentSettings
from webapp.models import AuditEvent, User

SMTP_PASSWORD = "smtp-secret-9f2c"


class Mailbox:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) that keeps what it receives
    and accepts the login ``dashboard`` / :data:`SMTP_PASSWORD` only."""

    def __init__(self) -> None:
        self.messages: list = []
        self.logins: list[str] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                outer.messages.append(message_from_bytes(envelope.content,
                                                         policy=policy.default))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"dashboard" \
                and auth_data.password == SMTP_PASSWORD.encode()
            if ok:
                outer.logins.append(auth_data.login.decode())
            return AuthResult(success=ok)

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     authenticator=authenticator, auth_require_tls=False)
        self.controller.start()

    def config(self) -> dict:
        return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": self.port,
                "SMTP_USERNAME": "dashboard", "SMTP_PASSWORD": SMTP_PASSWORD,
                "SMTP_FROM": "dashboard@example.com", "SMTP_STARTTLS": False}

    def wait(self, count: int, timeout: float = 10) -> list:
        from webapp.services import mail

        mail.wait_all(timeout)
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages

    def to(self, address: str) -> list:
        return [m for m in self.messages if m["To"] == address]


@pytest.fixture
def mailbox():
    box = Mailbox()
    yield box
    box.controller.stop()


def prod_app(make_app, tmp_path, monkeypatch, **config):
    """Target ``prod`` (1 approval). ``olga`` requests, ``anna`` and ``ann2``
    approve, ``vic`` views; all but ``ann2`` have an email address."""
    monkeypatch.setenv("PROD_URL", sqlite_url(tmp_path / "prod.db"))
    ini = make_env(tmp_path / "env", linear(3))
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"prod": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "PROD_URL",
        "policy": {"approvals_required": 1}}}), **config)
    heads = {name: token_headers(app, name, role) for name, role in (
        ("olga", "operator"), ("anna", "approver"), ("ann2", "approver"), ("vic", "viewer"))}
    with app.app_context():
        from webapp.extensions import db
        for name in ("olga", "anna", "vic"):
            db.session.execute(db.select(User).filter_by(username=name)).scalar_one() \
                .email = f"{name}@example.com"
        db.session.commit()
    return app, heads


def new_request(client, headers) -> int:
    posted = client.post("/api/v1/targets/prod/jobs", headers=headers, json={
        "command": "upgrade", "revision": "head", "reason": "release 7"})
    assert posted.status_code == 202, posted.json
    return posted.json["request"]


def test_mails_go_to_the_approvers_then_the_requester_then_the_approvers(
        make_app, tmp_path, monkeypatch, mailbox):
    app, h = prod_app(make_app, tmp_path, monkeypatch, **mailbox.config())
    client = app.test_client()
    request_id = new_request(client, h["olga"])
    # anna may approve and has an address; ann2 has none, olga asked, vic only views
    (created,) = mailbox.wait(1)
    assert created["To"] == "anna@example.com" and created["From"] == "dashboard@example.com"
    assert created["Subject"] == f"[alembic-dashboard] request {request_id} on prod " \
                                 "awaits your approval"
    body = created.get_content()
    assert "olga requests approval of" in body and "alembic upgrade head" in body
    assert "Reason: release 7" in body and f"http://localhost/requests/{request_id}" in body
    assert mailbox.logins == ["dashboard"]  # logged in with the configured account
    asked = client.post(f"/api/v1/requests/{request_id}/request-changes", headers=h["anna"],
                        json={"comment": "name needs 80 characters"})
    assert asked.status_code == 200, asked.json
    mailbox.wait(2)
    (changes,) = mailbox.to("olga@example.com")
    assert changes["Subject"] == f"[alembic-dashboard] changes requested on request " \
                                 f"{request_id} on prod"
    assert "anna requested changes" in changes.get_content()
    assert "name needs 80 characters" in changes.get_content()
    path = tmp_path / "env" / "versions" / "r001_rev.py"
    path.write_text(path.read_text().replace("sa.String(50)", "sa.String(80)"))
    again = client.post(f"/api/v1/requests/{request_id}/new-plan", headers=h["olga"],
                        json={})
    assert again.status_code == 200, again.json
    mailbox.wait(3)
    renewed = mailbox.to("anna@example.com")[1]
    assert "olga submitted a new plan for request" in renewed.get_content()
    assert len(mailbox.messages) == 3  # never to vic, ann2 or the requester herself
    assert SMTP_PASSWORD not in json.dumps([m.as_string() for m in mailbox.messages])


def test_a_dead_mail_server_neither_slows_nor_fails_a_request(make_app, tmp_path,
                                                              monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app, h = prod_app(make_app, tmp_path, monkeypatch, SMTP_HOST="127.0.0.1",
                      SMTP_PORT=port, SMTP_USERNAME="dashboard", SMTP_PASSWORD=SMTP_PASSWORD,
                      SMTP_FROM="dashboard@example.com", SMTP_STARTTLS=False)
    client = app.test_client()
    request_id = new_request(client, h["olga"])
    from webapp.services import mail

    mail.wait_all(15)
    with app.app_context():
        from webapp.extensions import db
        failed = db.session.execute(db.select(AuditEvent).filter_by(
            action="email", outcome="failed")).scalars().all()
        assert len(failed) == 1 and failed[0].target == "prod"
        assert json.loads(failed[0].details)["recipients"] == 1
        assert SMTP_PASSWORD not in failed[0].details
    listed = client.get("/api/v1/requests", headers=h["anna"]).json
    assert listed[0]["id"] == request_id and listed[0]["status"] == "open"


def test_without_smtp_settings_nothing_is_sent(make_app, tmp_path, monkeypatch, mailbox):
    app, h = prod_app(make_app, tmp_path, monkeypatch)
    new_request(app.test_client(), h["olga"])
    time.sleep(0.3)
    assert mailbox.messages == []


def test_admins_set_addresses_on_the_users_page_and_in_the_invitation(make_app):
    app = make_app()
    add_user(app, "root", "admin")
    admin = app.test_client()
    login(admin, "root")
    page = admin.get("/admin/users").get_data(as_text=True)
    invited = admin.post("/admin/users", data={
        "csrf_token": csrf_from(page), "username": "lead", "role": "approver",
        "kind": "person", "email": " Lead@Example.com "})
    assert invited.status_code == 200, invited.get_data(as_text=True)
    bad = admin.post("/admin/users", data={
        "csrf_token": csrf_from(page), "username": "lead2", "role": "approver",
        "kind": "person", "email": "not-an-address"})
    assert bad.status_code == 400 and "email must be an email address" in \
        bad.get_data(as_text=True)
    with app.app_context():
        from webapp.extensions import db
        lead = db.session.execute(db.select(User).filter_by(username="lead")).scalar_one()
        assert lead.email == "Lead@example.com"  # the domain normalised
        assert db.session.execute(db.select(User).filter_by(username="lead2")).scalar() is None
        lead_id = lead.id
    page = admin.get("/admin/users").get_data(as_text=True)
    assert 'value="Lead@example.com"' in page
    wrong = admin.post(f"/admin/users/{lead_id}/email",
                       data={"csrf_token": csrf_from(page), "email": "lead@"})
    assert wrong.status_code == 400
    no_csrf = admin.post(f"/admin/users/{lead_id}/email", data={"email": "x@example.com"})
    assert no_csrf.status_code == 400
    changed = admin.post(f"/admin/users/{lead_id}/email",
                         data={"csrf_token": csrf_from(page), "email": "tl@example.org"})
    assert changed.status_code == 303
    cleared = admin.post(f"/admin/users/{lead_id}/email",
                         data={"csrf_token": csrf_from(page), "email": ""})
    assert cleared.status_code == 303
    add_user(app, "dev", "operator")
    dev = app.test_client()
    login(dev, "dev")
    assert dev.post(f"/admin/users/{lead_id}/email", data={
        "csrf_token": csrf_from(dev.get("/").get_data(as_text=True)),
        "email": "dev@example.com"}).status_code == 403
    with app.app_context():
        from webapp.extensions import db
        assert db.session.get(User, lead_id).email is None
        events = [(e.outcome, json.loads(e.details).get("email")) for e in
                  db.session.execute(db.select(AuditEvent).filter_by(
                      action="account.email").order_by(AuditEvent.id)).scalars()]
        assert events[0][0] == "denied" and events[1:3] == [("ok", "tl@example.org"),
                                                            ("ok", None)]


@pytest.mark.parametrize(("environ", "message"), [
    ({"DASHBOARD_SMTP_HOST": "mail.example.com"}, "needs DASHBOARD_SMTP_FROM"),
    ({"DASHBOARD_SMTP_HOST": "m", "DASHBOARD_SMTP_FROM": "nobody"},
     "DASHBOARD_SMTP_FROM is not an email address"),
    ({"DASHBOARD_SMTP_PORT": "70000"}, "DASHBOARD_SMTP_PORT must be a whole number from 1"),
    ({"DASHBOARD_SMTP_STARTTLS": "maybe"}, "DASHBOARD_SMTP_STARTTLS must be on or off"),
    ({"DASHBOARD_SMTP_USERNAME": "u"}, "go together"),
])
def test_smtp_settings_are_checked(environ, message):
    with pytest.raises(ConfigurationError, match=message):
        EnvironmentSettings.from_environ(environ)
    good = EnvironmentSettings.from_environ({"DASHBOARD_SMTP_HOST": "mail.example.com",
                                             "DASHBOARD_SMTP_FROM": "db@example.com"})
    assert (good.smtp_port, good.smtp_starttls) == (587, True)
