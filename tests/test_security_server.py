"""Issue 10, item 2 and the gunicorn control socket, on real gunicorn with
several workers: parallel wrong passwords, a per-address limit shared
through Redis, and two dashboards on one host."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from support.common import PASSWORD, ROOT, add_user, free_port, login, stop_gunicorn, unavailable

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


def _redis_or_skip() -> None:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        unavailable("Redis", exc)


def test_parallel_logins_on_three_workers_per_username_and_per_address(gunicorn_server):
    """Real gunicorn, 3 workers, per-address limit of 50 per minute in Redis.
    40 wrong passwords for admin at once: only MAX_FAILED_LOGINS are checked
    (401), the rest throttled (429), then the right password too. Then 30
    logins with other usernames at once: the 10 attempts left for this
    address are checked, 20 refused, whichever worker took them."""
    _redis_or_skip()
    base = gunicorn_server({"DASHBOARD_RATELIMIT_STORAGE_URL": "redis://127.0.0.1:6379/0",
                            "DASHBOARD_RATELIMIT_PREFIX": "adtest-" + secrets.token_hex(4),
                            "DASHBOARD_LOGIN_RATE_LIMIT": "51 per minute"}, workers=3)
    statuses = _parallel_logins(base, ["admin"] * 40, "wrong password!!")
    assert statuses.count(401) <= accounts.MAX_FAILED_LOGINS, statuses
    assert statuses.count(401) + statuses.count(429) == 40, statuses
    cookie, token = _session_and_token(base)
    assert _post_login(base, cookie, token, "admin", PASSWORD) == 429  # hit 41
    names = [f"nobody{i}" for i in range(30)]  # other usernames: no lockout applies
    statuses = _parallel_logins(base, names, "wrong password!!")
    assert statuses.count(401) == 10 and statuses.count(429) == 20, statuses


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


def _bare_gunicorn(tmp_path, i: int, extra: dict):
    """gunicorn with our gunicorn.conf.py, without `flask init` (the master
    makes the control socket; no page is requested)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update(DASHBOARD_INSTANCE_PATH=str(tmp_path / f"instance{i}"), PORT=str(port),
               DASHBOARD_SECRET_KEY="s" * 32, WEB_CONCURRENCY="1", **extra)
    log = open(tmp_path / f"g{i}.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                             "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    proc.log = log
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            assert proc.poll() is None, (tmp_path / f"g{i}.log").read_text()
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


def test_two_dashboards_on_one_host_share_no_control_socket(tmp_path):
    """Two gunicorns with one HOME: neither uses gunicorn 27's shared default
    socket; one given GUNICORN_CONTROL_SOCKET has its own (0600)."""
    home = tmp_path / "home"
    home.mkdir()
    own = tmp_path / "gunicorn1.ctl"
    procs = []
    try:
        for i, extra in enumerate(({}, {"GUNICORN_CONTROL_SOCKET": str(own)})):
            procs.append(_bare_gunicorn(tmp_path, i, {"HOME": str(home), "XDG_RUNTIME_DIR": "",
                                                      **extra}))
        deadline = time.monotonic() + 10
        while not own.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not (home / ".gunicorn").exists()
        assert own.is_socket() and oct(own.stat().st_mode & 0o777) == "0o600"
    finally:
        for proc in procs:
            stop_gunicorn(proc)
            proc.log.close()
