"""Single sign-on through a real OpenID Connect provider (oidc-provider on
127.0.0.1): accounts from claims, groups to roles, and every forged or
replayed answer refused by Authlib's checks (state, PKCE, nonce, signature,
audience, issuer, expiry)."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
import support.idp as idp_tools
from support.common import PASSWORD, add_user, csrf_from

from webapp.config import ConfigurationError, oidc_settings, parse_role_map
from webapp.models import AuditEvent, User

CALLBACK = "http://localhost/login/oidc/callback"


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    provider = idp_tools.start([CALLBACK], tmp_path_factory.mktemp("idp") / "idp.log")
    yield provider
    provider.stop()


@pytest.fixture
def sso_app(demo_app_factory, idp):
    return demo_app_factory(**idp.config())


@pytest.fixture
def demo_app_factory(make_app, demo_databases, instance_path):
    import shutil

    def factory(**config):
        for db_file in demo_databases.glob("*.db"):
            shutil.copy(db_file, instance_path / db_file.name)
        return make_app(**config)
    return factory


def authorize(client, idp, login_name: str) -> tuple[str, str]:
    """Start at the dashboard, sign in at the provider; return the authorization
    URL and the callback URL (with code and state) the browser would open."""
    start = client.get("/login/oidc")
    assert start.status_code == 302
    auth_url = start.headers["Location"]
    browser = requests.Session()
    url, logged_in = auth_url, False
    for _ in range(10):
        if url.startswith(CALLBACK):
            return auth_url, url
        if "/interaction/" in url and not logged_in:
            browser.get(url, timeout=10).raise_for_status()
            answer = browser.post(url.rstrip("/") + "/login", allow_redirects=False, timeout=10,
                                  data={"login": login_name,
                                        "password": idp_tools.USERS[login_name]})
            logged_in = True
        else:
            answer = browser.get(url, allow_redirects=False, timeout=10)
        assert answer.status_code in (302, 303), answer.text[:500]
        url = urljoin(url, answer.headers["Location"])
    raise AssertionError("the provider did not send the browser back")


def finish(client, callback_url: str):
    parts = urlsplit(callback_url)
    return client.get(parts.path, query_string=parts.query)


def sso_login(client, idp, login_name: str):
    return finish(client, authorize(client, idp, login_name)[1])


def audit_rows(app, action="login") -> list[dict]:
    with app.app_context():
        from webapp.extensions import db
        rows = db.session.execute(db.select(AuditEvent).filter_by(action=action)
                                  .order_by(AuditEvent.id)).scalars()
        return [{"user": e.username, "outcome": e.outcome, **json.loads(e.details)}
                for e in rows]


def test_login_creates_the_account_from_claims_with_groups_and_role(sso_app, idp):
    client = sso_app.test_client()
    login_page = client.get("/login").get_data(as_text=True)
    assert "Sign in with Test IdP" in login_page and 'name="password"' in login_page
    auth_url, callback = authorize(client, idp, "alice")
    query = parse_qs(urlsplit(auth_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["nonce"] and query["state"] and query["response_type"] == ["code"]
    answer = finish(client, callback)
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    with sso_app.app_context():
        from webapp.extensions import db
        user = db.session.execute(db.select(User).filter_by(username="alice")).scalar_one()
        assert (user.oidc_subject, user.oidc_issuer) == ("sub-alice-0001", idp.issuer)
        assert user.groups == ["dba"] and user.role == "approver" and user.password_hash == ""
    ok = [e for e in audit_rows(sso_app) if e["outcome"] == "ok"]
    assert ok[-1]["identity"] == {"iss": idp.issuer, "sub": "sub-alice-0001"}
    assert ok[-1]["method"] == "oidc" and ok[-1]["groups"] == ["dba"]
    # the /audit page shows who the provider said it was
    audit_page = client.get("/audit").get_data(as_text=True)
    assert "sub-alice-0001" in audit_page
    # the second login finds the same account by its subject, role from the claim again
    with sso_app.app_context():
        from webapp.extensions import db
        db.session.execute(db.update(User).where(User.username == "alice").values(role="admin"))
        db.session.commit()
    second = sso_app.test_client()
    assert sso_login(second, idp, "alice").status_code == 302
    with sso_app.app_context():
        from webapp.extensions import db
        assert db.session.execute(db.select(db.func.count(User.id))).scalar() == 1
        assert db.session.execute(db.select(User.role)).scalar() == "approver"
    # the provider changed what alice may do (admin -> approver): her older
    # session ends, the new one works
    assert client.get("/").status_code == 302
    assert second.get("/").status_code == 200


def test_several_groups_give_the_highest_role_and_no_group_gives_none(sso_app, idp):
    assert sso_login(sso_app.test_client(), idp, "carol").status_code == 302
    nobody = sso_app.test_client()
    assert sso_login(nobody, idp, "dave").status_code == 302
    assert 'id="no-targets"' in nobody.get("/").get_data(as_text=True)
    with sso_app.app_context():
        from webapp.extensions import db
        roles = dict(db.session.execute(db.select(User.username, User.role)).all())
    assert roles == {"carol": "admin", "dave": "none"}


@pytest.mark.parametrize("mode", ["signature", "audience", "expired", "issuer", "unknown-key"])
def test_forged_id_tokens_are_refused(sso_app, idp, mode):
    client = sso_app.test_client()
    _, callback = authorize(client, idp, "bob")
    idp.tamper_next_token(mode)
    answer = finish(client, callback)
    assert answer.status_code == 401, answer.get_data(as_text=True)[:300]
    assert "ID token was refused" in answer.get_data(as_text=True)
    assert client.get("/").status_code == 302  # not logged in
    with sso_app.app_context():
        from webapp.extensions import db
        assert db.session.execute(db.select(db.func.count(User.id))).scalar() == 0
    failed = audit_rows(sso_app)[-1]
    assert (failed["outcome"], failed["reason"]) == ("failed", "id_token_invalid")


def test_unknown_and_replayed_state_are_refused(sso_app, idp):
    client = sso_app.test_client()
    _, callback = authorize(client, idp, "bob")
    stranger = sso_app.test_client()  # another browser: the state is not in its session
    assert finish(stranger, callback).status_code == 400
    assert stranger.get("/").status_code == 302
    assert finish(client, callback).status_code == 302  # the real browser: logged in
    client.post("/logout", data={"csrf_token": csrf_from(
        client.get("/").get_data(as_text=True))})
    replayed = finish(client, callback)  # same state again: consumed at the first use
    assert replayed.status_code == 400
    assert client.get("/").status_code == 302
    assert [e["reason"] for e in audit_rows(sso_app) if e["outcome"] == "failed"] == [
        "mismatching_state", "mismatching_state"]


def test_wrong_nonce_and_missing_pkce_verifier_are_refused(sso_app, idp):
    client = sso_app.test_client()
    _, callback = authorize(client, idp, "bob")
    state = parse_qs(urlsplit(callback).query)["state"][0]
    with client.session_transaction() as session:
        key = next(k for k in session if k.startswith("_state_oidc_") and state in k)
        stored = session[key]
        stored["data"]["nonce"] = "not-the-nonce-sent"
        session[key] = stored
    assert finish(client, callback).status_code == 401
    # the code of one login with the PKCE verifier of another: the provider refuses
    client = sso_app.test_client()
    _, first = authorize(client, idp, "bob")
    _, second = authorize(client, idp, "bob")
    code_of_first = parse_qs(urlsplit(first).query)["code"][0]
    state_of_second = parse_qs(urlsplit(second).query)["state"][0]
    answer = client.get("/login/oidc/callback",
                        query_string={"code": code_of_first, "state": state_of_second})
    assert answer.status_code == 400
    assert audit_rows(sso_app)[-1]["reason"] == "invalid_grant"
    assert client.get("/").status_code == 302


def test_local_login_off_leaves_only_single_sign_on(demo_app_factory, idp):
    app = demo_app_factory(**idp.config(LOCAL_LOGIN=False))
    add_user(app, "local", "admin")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert "Sign in with Test IdP" in page and 'name="password"' not in page
    token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    refused = client.post("/login", data={"username": "local", "password": PASSWORD,
                                          "csrf_token": token})
    assert refused.status_code == 403 and client.get("/").status_code == 302
    assert audit_rows(app)[-1]["reason"] == "local_login_off"
    assert sso_login(client, idp, "bob").status_code == 302
    assert client.get("/").status_code == 200


def test_a_local_username_is_not_taken_over(sso_app, idp):
    add_user(sso_app, "alice", "admin")
    client = sso_app.test_client()
    answer = sso_login(client, idp, "alice")
    assert answer.status_code == 403 and "belongs to another account" in answer.get_data(
        as_text=True)
    assert client.get("/").status_code == 302


def test_groups_served_only_at_userinfo_are_read_there(demo_app_factory, tmp_path):
    provider = idp_tools.start([CALLBACK], tmp_path / "idp.log", claims_at_userinfo=True)
    try:
        app = demo_app_factory(**provider.config())
        assert sso_login(app.test_client(), provider, "alice").status_code == 302
        with app.app_context():
            from webapp.extensions import db
            user = db.session.execute(db.select(User)).scalar_one()
            assert (user.username, user.groups, user.role) == ("alice", ["dba"], "approver")
    finally:
        provider.stop()


def test_an_unreachable_provider_is_a_clear_502(demo_app_factory, idp):
    from support.common import free_port

    app = demo_app_factory(**idp.config(OIDC_ISSUER=f"http://127.0.0.1:{free_port()}"))
    answer = app.test_client().get("/login/oidc")
    assert answer.status_code == 502
    assert "cannot be reached" in answer.get_data(as_text=True)
    assert audit_rows(app)[-1]["reason"] == "provider_unreachable"


def test_settings_from_the_environment():
    assert parse_role_map(" dba=approver , devs=operator,") == {"dba": "approver",
                                                                 "devs": "operator"}
    for bad in ("dba", "dba=boss", "=admin"):
        with pytest.raises(ConfigurationError):
            parse_role_map(bad)
    with pytest.raises(ConfigurationError):
        oidc_settings({"DASHBOARD_OIDC_ISSUER": "https://idp"})  # no client id/secret
    with pytest.raises(ConfigurationError):
        oidc_settings({"DASHBOARD_LOCAL_LOGIN": "off"})  # nobody could log in
    settings = oidc_settings({"DASHBOARD_OIDC_ISSUER": "https://idp/realms/x/",
                              "DASHBOARD_OIDC_CLIENT_ID": "c", "DASHBOARD_OIDC_CLIENT_SECRET": "s",
                              "DASHBOARD_LOCAL_LOGIN": "off"})
    assert settings["OIDC_ISSUER"] == "https://idp/realms/x" and not settings["LOCAL_LOGIN"]
    assert settings["OIDC_ROLES_CLAIM"] == "groups" and settings["OIDC_DEFAULT_ROLE"] == "none"
