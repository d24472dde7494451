"""Issue 10, item 2 and the gunicorn control socket, on real gunicorn with
several workers: parallel wrong passwords, a per-address limit shared
through Redis, and two dashboards on one host."""

from __future__ import annotations

import http.client
import re
import secrets
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import _unavailable, add_user, login, start_gunicorn, stop_gunicorn

from webapp.services import accounts

REDIS = ("127.0.0.1", 6379)


def _session_and_token(base: str) -> tuple[str, str]:
    """A session cookie and its CSRF token from GET /login."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/login")
    response = conn.getresponse()
    html = response.read().decode()
    cookie = next(c.split(";", 1)[0] for c in response.msg.get_all("Set-Cookie")
                  if c.startswith("session="))
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
    conn.close()
    return cookie, token


def _post_login(base: str, cookie: str, token: str, username: str, password: str) -> int:
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    body = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrf_token": token})
    conn.request("POST", "/login", body=body, headers={
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    status = conn.getresponse().status
    conn.close()
    return status


def _parallel_logins(base: str, usernames: list[str], password: str) -> list[int]:
    cookie, token = _session_and_token(base)
    with ThreadPoolExecutor(len(usernames)) as pool:
        return list(pool.map(lambda name: _post_login(base, cookie, token, name, password),
                             usernames))


def test_parallel_wrong_passwords_are_checked_at_most_five_times(gunicorn_server):
    """40 wrong passwords at once across 3 workers: only MAX_FAILED_LOGINS are
    checked (401), the rest are throttled (429), then the right password too."""
    base = gunicorn_server({"DASHBOARD_LOGIN_RATE_LIMIT": "1000 per minute"}, workers=3)
    statuses = _parallel_logins(base, ["admin"] * 40, "wrong password!!")
    assert statuses.count(401) <= accounts.MAX_FAILED_LOGINS, statuses
    assert statuses.count(401) + statuses.count(429) == 40, statuses
    cookie, token = _session_and_token(base)
    from conftest import PASSWORD

    assert _post_login(base, cookie, token, "admin", PASSWORD) == 429


def _redis_or_skip() -> None:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        _unavailable("Redis", exc)


def test_per_address_limit_is_shared_by_all_workers_through_redis(gunicorn_server):
    _redis_or_skip()
    base = gunicorn_server({"DASHBOARD_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
                            "DASHBOARD_RATELIMIT_PREFIX": "adtest-" + secrets.token_hex(4),
                            "DASHBOARD_LOGIN_RATE_LIMIT": "10 per minute"}, workers=3)
    names = [f"nobody{i}" for i in range(30)]  # other usernames: the lockout never applies
    statuses = _parallel_logins(base, names, "wrong password!!")
    assert statuses.count(429) == 20 and statuses.count(401) == 10, statuses


def test_unknown_and_known_usernames_get_the_same_lockout(demo_app):
    add_user(demo_app, "carol", "viewer")
    answers = {}
    for name in ("carol", "no-such-user"):
        client = demo_app.test_client()
        codes = [login(client, name, "wrong-wrong").status_code
                 for _ in range(accounts.MAX_FAILED_LOGINS + 1)]
        page = login(client, name, "wrong-wrong").get_data(as_text=True)
        answers[name] = (codes, re.search(r'class="flash error"[^>]*>([^<]+)<', page).group(1))
    assert answers["carol"] == answers["no-such-user"]
    assert answers["carol"][0][-1] == 429


@pytest.mark.parametrize("own_socket", [False, True])
def test_two_dashboards_on_one_host_share_no_control_socket(tmp_path, own_socket):
    home = tmp_path / "home"
    home.mkdir()
    procs, sockets = [], []
    try:
        for i in range(2):
            instance = tmp_path / f"instance{i}"
            instance.mkdir()
            env = {"HOME": str(home), "XDG_RUNTIME_DIR": ""}
            if own_socket:
                sockets.append(tmp_path / f"gunicorn{i}.ctl")
                env["GUNICORN_CONTROL_SOCKET"] = str(sockets[-1])
            proc, _base, _env = start_gunicorn(instance, tmp_path / f"g{i}.log", env, workers=1)
            procs.append(proc)
        deadline = time.monotonic() + 10
        while own_socket and not all(s.exists() for s in sockets) and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (home / ".gunicorn" / "gunicorn.ctl").exists()
        for path in sockets:
            assert path.is_socket() and oct(path.stat().st_mode & 0o777) == "0o600"
    finally:
        for proc in procs:
            stop_gunicorn(proc)
