"""Issue 17, finding 6 (server side): a dashboard database that is down
answers 503 (and /readyz says so, /healthz does not look); the per-address
login limit is shared by every gunicorn worker without Redis; sessions end
after an idle and an absolute time; a target one may not see answers like
a target that does not exist."""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from support.common import PG_SERVER, add_user, csrf_from, login
from support.envtools import linear, make_env, sqlite_url, write_targets_file

from webapp.services import accounts

# ---------------------------------------------------------------- helpers


def _bearer(app, name: str) -> dict:
    with app.app_context():
        return {"Authorization": "Bearer " + accounts.create_token(accounts.get_user(name),
                                                                     "t")}


def _drop_database(url: str) -> None:
    """DROP the PostgreSQL database of ``url`` (its connections killed first)."""
    name = sa.engine.make_url(url).database
    engine = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
            conn.execute(sa.text(f'DROP DATABASE "{name}"'))
    finally:
        engine.dispose()


def _assertunavailable_answers(client, headers: dict) -> None:
    """/healthz 200 (no database), /readyz 503, a page 503 HTML, the API 503 JSON."""
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json == {"status": "unavailable"}
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 503, html[:500]
    assert page.mimetype == "text/html" and "dashboard database unavailable" in html.lower()
    assert "Traceback" not in html and "OperationalError" not in html
    api = client.get("/api/v1/targets", headers=headers)
    assert api.status_code == 503, api.get_data(as_text=True)[:500]
    assert api.json["error"] == "dashboard database unavailable"
    assert "OperationalError" not in api.get_data(as_text=True)


# ------------------------------------------- 1. dashboard database unavailable


@pytest.mark.postgresql
def test_dropped_postgresql_dashboard_database_answers_503(make_app, pg_url):
    app = make_app(SQLALCHEMY_DATABASE_URI=pg_url)
    add_user(app, "alice", "admin")
    headers = _bearer(app, "alice")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").json == {"status": "ok"}
    assert client.get("/").status_code == 200
    _drop_database(pg_url)
    _assertunavailable_answers(client, headers)


def test_unreadable_sqlite_dashboard_database_answers_503(make_app, instance_path):
    app = make_app()
    add_user(app, "alice", "admin")
    headers = _bearer(app, "alice")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    with app.app_context():
        from webapp.extensions import db
        db.engine.dispose()  # the next request opens the file again
    (instance_path / "dashboard.db").rename(instance_path / "moved.db")
    (instance_path / "dashboard.db").mkdir()  # a folder: SQLite cannot open it
    try:
        _assertunavailable_answers(client, headers)
    finally:
        (instance_path / "dashboard.db").rmdir()


def test_readyz_needs_no_login_and_says_only_ok(demo_app):
    answer = demo_app.test_client().get("/readyz")
    assert answer.status_code == 200 and answer.json == {"status": "ok"}


# ------------------------------------- 2. per-address limit over all workers


def _session_and_token(base: str) -> tuple[str, str]:
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/login")
    response = conn.getresponse()
    html = response.read().decode()
    cookie = next(c.split(";", 1)[0] for c in response.msg.get_all("Set-Cookie")
                  if c.startswith("session="))
    conn.close()
    return cookie, csrf_from(html)


def _post_login(base: str, cookie: str, token: str, username: str) -> int:
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = urllib.parse.urlencode({"username": username, "password": "wrong password!!",
                                   "csrf_token": token})
    conn.request("POST", "/login", body=body, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def test_per_address_limit_without_redis_is_shared_by_all_workers(gunicorn_server,
                                                                 monkeypatch):
    """3 gunicorn workers, no Redis: 24 wrong passwords (other usernames, so
    no per-username lockout) from one address at once; exactly the 8 of the
    limit are checked, whichever worker took them."""
    for name in ("DASHBOARD_BROKER_URL", "DASHBOARD_RATELIMIT_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    base = gunicorn_server({"DASHBOARD_LOGIN_RATE_LIMIT": "8 per minute"}, workers=3)
    cookie, token = _session_and_token(base)
    names = [f"nobody{i}" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda n: _post_login(base, cookie, token, n), names))
    assert statuses.count(401) == 8 and statuses.count(429) == 16, statuses


def test_per_address_limit_counts_in_the_dashboard_database(make_app):
    """Two apps on one dashboard database (two workers): the count is shared."""
    first = make_app(LOGIN_RATE_LIMIT="3 per minute")
    second = make_app(LOGIN_RATE_LIMIT="3 per minute")
    statuses = [login(app.test_client(), f"n{i}", "wrong-wrong").status_code
                for i, app in enumerate([first, second, first, second, first])]
    assert statuses == [401, 401, 401, 429, 429]


# ------------------------------------------------------ 3. session timeouts


def test_idle_session_is_sent_to_login(make_app):
    """Used at least every 1-2 s, a session with a 4 s idle limit stays (its
    last-seen stamp is refreshed once older than a tenth of the limit); left
    alone for 5 s it ends. Margins of a second or more: a loaded machine
    answers a page in well under that."""
    app = make_app(SESSION_IDLE_MINUTES=4 / 60)  # 4 s
    add_user(app, "alice", "admin")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    for _ in range(3):
        time.sleep(1.5)
        assert client.get("/").status_code == 200  # in use: still valid
    time.sleep(5.0)
    idle = client.get("/")
    assert idle.status_code == 302 and "/login" in idle.headers["Location"]
    assert client.get("/").status_code == 302  # ended, not just refused once


def test_active_session_ends_at_the_absolute_limit(make_app):
    app = make_app(SESSION_MAX_HOURS=3 / 3600)  # 3 s
    add_user(app, "alice", "admin")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    codes = []
    for _ in range(9):
        codes.append(client.get("/").status_code)
        time.sleep(0.5)
    assert codes[0] == 200 and codes[-1] == 302, codes
    assert "/login" in client.get("/").headers["Location"]


def test_a_late_response_does_not_undo_a_logout(make_app):
    """A page or fragment answered while the session is current leaves the
    session cookie alone: a response that lands after the logout (an htmx
    fragment still loading when *Log out* is pressed) must not put the old
    session back in the browser and swallow the 'You are logged out.' flash."""
    app = make_app()
    add_user(app, "alice", "admin")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    late = client.get("/")  # as if sent before the logout, answered after it
    assert late.status_code == 200
    assert not late.headers.getlist("Set-Cookie"), late.headers.getlist("Set-Cookie")
    token = csrf_from(page.get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert "You are logged out." in client.get("/login").get_data(as_text=True)


def test_backdated_session_stamps_are_refused(make_app):
    """The stamps are in the signed session: older ones (a copied cookie
    left unused) end the session, as do none at all (from before)."""
    app = make_app()
    add_user(app, "alice", "admin")
    for change in ("idle", "absolute", "missing"):
        client = app.test_client()
        assert login(client, "alice").status_code == 302
        with client.session_transaction() as sess:
            if change == "idle":
                sess["_seen_at"] = time.time() - 2 * 3600
            elif change == "absolute":
                sess["_login_at"] = time.time() - 13 * 3600
            else:
                sess.pop("_login_at")
        assert client.get("/").status_code == 302, change


def test_remember_cookie_does_not_bypass_the_session_limits(make_app):
    from flask_login.utils import encode_cookie

    app = make_app()
    add_user(app, "alice", "admin")
    client = app.test_client()
    assert login(client, "alice").status_code == 302
    with client.session_transaction() as sess:
        user_id = sess["_user_id"]
    with app.test_request_context():
        remember = encode_cookie(str(user_id))
    fresh = app.test_client()
    fresh.set_cookie(app.config.get("REMEMBER_COOKIE_NAME", "remember_token"), remember)
    answer = fresh.get("/")
    assert answer.status_code == 302 and "/login" in answer.headers["Location"]


def test_session_settings_are_read_and_checked(tmp_path):
    from webapp.config import ConfigurationError, settings_from_environment

    defaults = settings_from_environment({}, tmp_path)
    assert defaults["SESSION_IDLE_MINUTES"] == 60 and defaults["SESSION_MAX_HOURS"] == 12
    assert defaults["PERMANENT_SESSION_LIFETIME"].total_seconds() == 12 * 3600
    given = settings_from_environment({"DASHBOARD_SESSION_IDLE_MINUTES": "15",
                                       "DASHBOARD_SESSION_MAX_HOURS": "8"}, tmp_path)
    assert given["SESSION_IDLE_MINUTES"] == 15 and given["SESSION_MAX_HOURS"] == 8
    for bad in ({"DASHBOARD_SESSION_IDLE_MINUTES": "0"},
                {"DASHBOARD_SESSION_MAX_HOURS": "-1"},
                {"DASHBOARD_SESSION_IDLE_MINUTES": "soon"}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            settings_from_environment(bad, tmp_path)


# ------------------------------------------- 4. hidden targets answer 404


@pytest.fixture
def hidden_app(make_app, tmp_path, monkeypatch):
    """``open`` (viewers user:vera) and ``tgtsecret`` (no grant for vera)."""
    ini = make_env(tmp_path / "env", linear(1))
    targets = {}
    for name, policy in [("open", {"viewers": ["user:vera"], "operators": ["user:vera"]}),
                         ("tgtsecret", {})]:
        monkeypatch.setenv(f"{name.upper()}_URL", sqlite_url(tmp_path / f"{name}.db"))
        (tmp_path / f"{name}.db").touch()
        targets[name] = {"tier": "development", "alembic_ini": str(ini),
                         "url_env": f"{name.upper()}_URL", "policy": policy}
    app = make_app(write_targets_file(tmp_path / "targets.toml", targets))
    add_user(app, "vera", "none")
    return app


def _same(text: str, name: str) -> str:
    """The answer with the name asked for and the CSRF tokens blanked out."""
    text = re.sub(r'value="[^"]*"', 'value=""', text)
    text = re.sub(r'"X-CSRFToken": "[^"]*"', '"X-CSRFToken": ""', text)  # hx-headers
    return text.replace(repr(name), "NAME").replace(name, "NAME")


@pytest.mark.parametrize("path", ["/targets/{}", "/targets/{}/history", "/targets/{}/card",
                                  "/targets/{}/plan?command=upgrade&revision=heads",
                                  "/targets/{}/revisions/r000"])
def test_hidden_target_pages_answer_like_missing_ones(hidden_app, path):
    client = hidden_app.test_client()
    login(client, "vera")
    assert client.get(path.format("open")).status_code in (200, 404)
    hidden = client.get(path.format("tgtsecret"))
    missing = client.get(path.format("tgtnosuch"))
    assert hidden.status_code == missing.status_code == 404
    assert _same(hidden.get_data(as_text=True), "tgtsecret") == \
        _same(missing.get_data(as_text=True), "tgtnosuch")


def test_hidden_target_posts_answer_like_missing_ones(hidden_app):
    client = hidden_app.test_client()
    login(client, "vera")
    token = csrf_from(client.get("/targets/open").get_data(as_text=True))
    answers = {}
    for name in ("tgtsecret", "tgtnosuch"):
        answers[name] = [client.post(f"/targets/{name}/{what}", data={
            "csrf_token": token, "command": "upgrade", "revision": "heads"})
            for what in ("jobs", "rehearsals", "requests")]
    for hidden, missing in zip(answers["tgtsecret"], answers["tgtnosuch"], strict=True):
        assert hidden.status_code == missing.status_code == 404
        assert _same(hidden.get_data(as_text=True), "tgtsecret") == \
            _same(missing.get_data(as_text=True), "tgtnosuch")


@pytest.mark.parametrize("method, path, body", [
    ("get", "/api/v1/targets/{}/history", None),
    ("post", "/api/v1/targets/{}/jobs", {"command": "upgrade", "revision": "heads"}),
    ("post", "/api/v1/targets/{}/rehearsals", {"command": "upgrade", "revision": "heads"}),
])
def test_hidden_target_api_answers_like_missing_ones(hidden_app, method, path, body):
    client = hidden_app.test_client()
    headers = _bearer(hidden_app, "vera")
    answers = {name: getattr(client, method)(path.format(name), headers=headers, json=body)
               for name in ("tgtsecret", "tgtnosuch")}
    assert answers["tgtsecret"].status_code == answers["tgtnosuch"].status_code == 404
    assert _same(answers["tgtsecret"].get_data(as_text=True), "tgtsecret") == \
        _same(answers["tgtnosuch"].get_data(as_text=True), "tgtnosuch")


def test_jobs_and_requests_of_a_hidden_target_answer_like_missing_ones(hidden_app):
    """A job or request id of a target the user may not see answers like an
    id that does not exist (its page would name the target)."""
    from webapp.extensions import db
    from webapp.models import ApprovalRequest, Job, utcnow

    with hidden_app.app_context():
        job = Job(target="tgtsecret", command="upgrade", revision="heads", plan_hash="0" * 64)
        found = ApprovalRequest(target="tgtsecret", command="upgrade", revision="heads",
                                plan_hash="0" * 64, plan="{}", expires_at=utcnow())
        db.session.add_all([job, found])
        db.session.commit()
        job_id, request_id = job.id, found.id
    client = hidden_app.test_client()
    login(client, "vera")
    for path in ("/jobs/{}", "/requests/{}", "/api/v1/jobs/{}"):
        ident = request_id if "requests" in path else job_id
        hidden, missing = client.get(path.format(ident)), client.get(path.format(ident + 100))
        assert hidden.status_code == missing.status_code == 404, path
        body = hidden.get_data(as_text=True)
        assert "tgtsecret" not in body, path
        def no_id(text: str) -> str:
            return _same(re.sub(r"(job|request) \d+", r"\1 ID", text), "x")

        assert no_id(body) == no_id(missing.get_data(as_text=True)), path
