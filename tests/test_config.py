"""Settings: secret key handling, production refusals, cookie flags, htmx SRI."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from webapp import PROJECT_ROOT, create_app
from webapp.config import ConfigurationError


def test_development_generates_and_keeps_secret_key(instance_path, monkeypatch):
    monkeypatch.delenv("DASHBOARD_SECRET_KEY", raising=False)
    app = create_app()
    key_file = instance_path / "secret_key"
    assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
    assert app.config["SECRET_KEY"] == key_file.read_text()
    assert create_app().config["SECRET_KEY"] == app.config["SECRET_KEY"]
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_processes_starting_together_share_one_whole_secret_key(tmp_path):
    """Gunicorn workers and job processes may start at the same moment on a
    new instance folder: each gets the same, whole key (never an error, never
    the empty file another is still writing), and no temporary file stays."""
    import threading

    from webapp.config import secret_key

    def start(barrier, instance, keys, errors):
        barrier.wait()
        try:
            keys.append(secret_key({}, instance, production=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    for round_ in range(20):
        instance = tmp_path / f"instance-{round_}"
        barrier, keys, errors = threading.Barrier(8), [], []
        threads = [threading.Thread(target=start, args=(barrier, instance, keys, errors))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and len(set(keys)) == 1 and len(keys[0]) >= 60, (errors, keys)
        assert [p.name for p in instance.iterdir()] == ["secret_key"]
        assert (instance / "secret_key").read_text() == keys[0]


def test_production_refuses_to_start_without_secret_key(instance_path, monkeypatch):
    monkeypatch.delenv("DASHBOARD_SECRET_KEY", raising=False)
    monkeypatch.setenv("DASHBOARD_ENV", "production")
    with pytest.raises(ConfigurationError, match="DASHBOARD_SECRET_KEY is not set"):
        create_app()
    monkeypatch.setenv("DASHBOARD_SECRET_KEY", "x" * 40)
    app = create_app()
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert not (instance_path / "secret_key").exists()


def test_htmx_from_cdn_with_sri_of_the_vendored_copy(logged_in):
    vendored = (PROJECT_ROOT / "static" / "vendor" / "htmx-2.0.11.min.js").read_bytes()
    sri = "sha384-" + base64.b64encode(hashlib.sha384(vendored).digest()).decode()
    page = logged_in.get("/").get_data(as_text=True)
    tag = re.search(r'<script src="https://[^"]*htmx\.org@2\.0\.11[^"]*"[^>]*>', page, re.S)
    assert tag and f'integrity="{sri}"' in tag.group(0)
    assert 'crossorigin="anonymous"' in tag.group(0)
    assert "/static/vendor/htmx-2.0.11.min.js" in page  # fallback
    assert b'version:"2.0.11"' in vendored
    assert 'X-CSRFToken' in page  # every htmx request carries the token


def test_pages_answer_while_another_process_is_committing_to_the_dashboard_db(
        make_app, instance_path):
    """SQLite dashboard database: pages and API reads are answered while
    another process holds the file's write lock in the middle of its commit
    (a job process writing its log, paused there). In WAL mode a reader does
    not wait, and a token used a moment ago writes nothing; in the default
    rollback-journal mode each waited for the lock until its timeout and
    answered 500 "database is locked"."""
    import sqlite3
    import time

    from support.common import add_user, login
    from support.jobtools import token_headers

    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": 2}})
    add_user(app, "alice", "admin")
    client = app.test_client()
    login(client, "alice")
    headers = token_headers(app, "pipeline", "operator")
    assert client.get("/api/v1/targets", headers=headers).status_code == 200
    db_file = instance_path / "dashboard.db"
    reader = sqlite3.connect(db_file)
    assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reader.close()
    writer = sqlite3.connect(db_file, isolation_level=None, timeout=0)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # what a commit holds while it writes
        writer.execute("UPDATE users SET username = username")
        started = time.monotonic()
        for page in ("/", "/audit", "/requests"):
            response = client.get(page)
            assert response.status_code == 200, (page, response.status_code)
        assert client.get("/api/v1/targets", headers=headers).status_code == 200
        # pages read past the held write lock: never its 30 s wait (10 s leaves
        # room for a loaded machine)
        assert time.monotonic() - started < 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("DASHBOARD_TRUSTED_PROXIES", "two", "DASHBOARD_TRUSTED_PROXIES must be a whole number of "
                                         "at least 0, got 'two'"),
    ("DASHBOARD_MAX_CONTENT_LENGTH", "0", "DASHBOARD_MAX_CONTENT_LENGTH must be a whole number "
                                          "of at least 1, got '0'"),
    ("DASHBOARD_MAX_CONTENT_LENGTH", "1MB", "DASHBOARD_MAX_CONTENT_LENGTH must be a whole "
                                            "number of at least 1, got '1MB'"),
    ("DASHBOARD_REQUEST_TTL_HOURS", "-2", "DASHBOARD_REQUEST_TTL_HOURS must be a number above "
                                          "0, got '-2'"),
    ("DASHBOARD_ENV", "staging", "DASHBOARD_ENV must be development or production, "
                                 "got 'staging'"),
])
def test_every_number_setting_is_checked_with_a_clear_message(instance_path, monkeypatch,
                                                              variable, value, message):
    """The settings schema (pydantic, webapp/settings_schema.py) checks every
    variable; these three were read with a bare int()/float() before, so a
    typo stopped the app with a ValueError traceback instead of this line."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as refused:
        create_app()
    assert str(refused.value) == message


def test_settings_defaults_and_empty_values(tmp_path):
    from webapp.config import settings_from_environment

    defaults = settings_from_environment({}, tmp_path)
    assert (defaults["TRUSTED_PROXIES"], defaults["MAX_CONTENT_LENGTH"],
            defaults["REQUEST_TTL_HOURS"]) == (0, 1024 * 1024, 24.0)
    # empty means unset (the default), except that an empty COOKIE_SECURE is off
    blank = settings_from_environment({"DASHBOARD_TRUSTED_PROXIES": " ", "DASHBOARD_ENV": "",
                                       "DASHBOARD_COOKIE_SECURE": ""}, tmp_path)
    assert blank["TRUSTED_PROXIES"] == 0 and blank["DASHBOARD_ENV"] == "development"
    assert blank["SESSION_COOKIE_SECURE"] is False
    production = settings_from_environment({"DASHBOARD_ENV": "production",
                                            "DASHBOARD_SECRET_KEY": "k" * 40,
                                            "DASHBOARD_TRUSTED_PROXIES": "1"}, tmp_path)
    assert production["SESSION_COOKIE_SECURE"] is True and production["TRUSTED_PROXIES"] == 1
