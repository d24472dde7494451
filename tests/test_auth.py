"""Login, logout, CSRF, roles, tokens and the login-required rule."""

from __future__ import annotations

import re

import pytest
from support.common import PASSWORD, add_user, csrf_from, login

from webapp.models import ApiToken, User
from webapp.services import accounts

PUBLIC = {"/login", "/healthz", "/readyz"}  # /readyz: readiness, no details (issue 17)
SSO_STEPS = {"/login/oidc", "/login/oidc/callback"}  # public login steps; 404 with SSO off
PASSWORD_LINK = "/password/x"  # public: an unknown link is a 404 (GET) or a CSRF 400 (POST)


def test_every_route_but_login_healthz_static_requires_login(demo_app):
    client = demo_app.test_client()
    checked = 0
    for rule in demo_app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        url = rule.rule.replace("<name>", "demo-staging").replace(
            "<revision>", "1f3a9c2e7b10").replace("<token>", "x")
        url = re.sub(r"<int:\w+>", "1", url)
        # <any(a, b, "c-d"):x>: the first choice
        url = re.sub(r"<any\(([^,)]+)[^>]*>", lambda m: m.group(1).strip('" '), url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            if url in PUBLIC:
                assert response.status_code in (200, 400), url
                continue
            if url in SSO_STEPS:
                assert response.status_code == 404, url
                continue
            if url == PASSWORD_LINK:
                assert response.status_code == (404 if method == "GET" else 400), url
                continue
            checked += 1
            if url.startswith("/api/"):
                assert response.status_code == 401, (method, url)
                assert response.is_json and response.json["error"] == "authentication required"
            elif method == "GET":
                assert response.status_code == 302, (method, url)
                assert "/login" in response.headers["Location"]
            else:  # POST without session and without CSRF token
                assert response.status_code in (302, 400), (method, url)
    assert checked >= 8
    assert client.get("/static/css/app.css").status_code == 200
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json == {"status": "ok"}


def test_login_with_right_password_then_logout(demo_app):
    add_user(demo_app, "bob", "viewer")
    client = demo_app.test_client()
    response = login(client, "bob")
    assert response.status_code == 302 and response.headers["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200 and "bob" in page.get_data(as_text=True)
    cookie = client.get_cookie("session")
    assert cookie.http_only and cookie.same_site == "Lax"
    token = csrf_from(page.get_data(as_text=True))
    assert client.get("/logout").status_code == 405  # logout is POST only
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_wrong_password_gives_no_session(demo_app):
    add_user(demo_app, "bob", "viewer")
    client = demo_app.test_client()
    response = login(client, "bob", "wrong password!")
    assert response.status_code == 401
    assert "Wrong username or password." in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
    response = login(client, "nobody", PASSWORD)
    assert response.status_code == 401


def test_post_without_csrf_token_is_rejected(demo_app):
    add_user(demo_app, "bob", "viewer")
    client = demo_app.test_client()
    response = client.post("/login", data={"username": "bob", "password": PASSWORD})
    assert response.status_code == 400
    assert client.get("/").status_code == 302
    login(client, "bob")
    assert client.post("/logout").status_code == 400  # no token
    assert client.get("/").status_code == 200  # still logged in


def test_login_is_throttled_after_repeated_failures(demo_app):
    add_user(demo_app, "carol", "viewer")
    client = demo_app.test_client()
    for _ in range(accounts.MAX_FAILED_LOGINS):
        assert login(client, "carol", "wrong-wrong").status_code == 401
    response = login(client, "carol")  # right password, but locked for a while
    assert response.status_code == 429
    assert client.get("/").status_code == 302


def test_open_redirect_after_login_is_refused(demo_app):
    add_user(demo_app, "bob", "viewer")
    client = demo_app.test_client()
    page = client.get("/login?next=https://evil.example/")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post("/login?next=https://evil.example/",
                           data={"username": "bob", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_passwords_and_tokens_are_stored_hashed(demo_app):
    add_user(demo_app, "dave", "operator")
    with demo_app.app_context():
        from webapp.extensions import db

        user = db.session.execute(db.select(User).filter_by(username="dave")).scalar_one()
        assert PASSWORD not in user.password_hash and user.password_hash.startswith("scrypt:")
        token = accounts.create_token(user, "ci")
        row = db.session.execute(db.select(ApiToken)).scalar_one()
        assert token not in (row.token_hash, row.prefix) and len(row.token_hash) == 64
        assert accounts.user_for_token(token).username == "dave"
        assert accounts.user_for_token(token + "x") is None


def test_roles_are_ordered(demo_app):
    with demo_app.app_context():
        user = User(username="x", role="approver", password_hash="x")
        assert user.has_role("viewer") and user.has_role("operator") and user.has_role("approver")
        assert not user.has_role("admin")


@pytest.mark.parametrize("bad", [("", "viewer", PASSWORD), ("ok", "root", PASSWORD),
                                 ("ok", "viewer", "short"), ("bad name", "viewer", PASSWORD)])
def test_invalid_accounts_are_refused(demo_app, bad):
    with demo_app.app_context(), pytest.raises(accounts.AccountError):
        accounts.create_user(*bad)


def test_cli_create_user_and_token(demo_app):
    runner = demo_app.test_cli_runner()
    result = runner.invoke(args=["create-user", "erin", "--role", "operator",
                                 "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["create-token", "erin"])
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("adb_")
    client = demo_app.test_client()
    response = client.get("/api/v1/targets", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    # a bearer token is for the API only
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 302
    result = runner.invoke(args=["create-user", "erin", "--role", "operator",
                                 "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code != 0 and "already exists" in result.output
    assert runner.invoke(args=["create-token", "nobody"]).exit_code != 0


def test_the_shipped_password_hash_is_scrypt_at_full_cost(make_app):
    """The suite hashes with a cheap scrypt cost (tests/conftest.py); the
    dashboard as shipped uses werkzeug's scrypt at N=2**15, r=8, p=1."""
    app = make_app(PASSWORD_HASH_METHOD=None)
    add_user(app, "erin", "viewer")
    with app.app_context():
        from webapp.extensions import db

        user = db.session.execute(db.select(User).filter_by(username="erin")).scalar_one()
        assert user.password_hash.startswith("scrypt:32768:8:1$")
    from webapp import create_app

    shipped = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x"})
    with shipped.app_context():
        assert accounts.hash_password("x" * 20).startswith("scrypt:32768:8:1$")
