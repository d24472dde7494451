"""A target's process sees only its own environment, never the dashboard's
secrets (issue 17, finding 7), and every secret the dashboard knows is
scrubbed from job logs, agent output and errors — also when a logger
changed its case or percent-encoded it.

Real pieces: a real Alembic environment whose env.py prints ``os.environ``,
run as a real job through the app (the local job process), through
:func:`webapp.core.runner.run_agent` (offline SQL), and through a
:class:`Standby` (the Celery worker's path).
"""

from __future__ import annotations

import ast
import json
import re

from support.envtools import linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

from webapp.core import runner
from webapp.core.targets import load_targets, register_secrets, scrub_secrets

SECRET_KEY = "Sk-9f2LmQzT4xVb7NwR1c"
ADMIN_PASSWORD = "Adm1n-PW-xy7QzLk"
OTHER_PASSWORD = "0ther:Pw@Zq81"  # percent-encoded in its URL
OTHER_URL = "postgresql+psycopg://svc:0ther%3APw%40Zq81@db.example.invalid:5432/other"
OWN_FLAG = "own-env-flag-42"

# env.py prints its whole environment (what any project's code could do)
DUMP = 'print("ENVDUMP=" + repr(dict(os.environ)), flush=True)\n'


def _dumped(output: str) -> dict[str, str]:
    """The environment env.py printed (the last dump in ``output``)."""
    lines = [line for line in output.splitlines() if line.startswith("ENVDUMP=")]
    assert lines, output[-2000:]
    return ast.literal_eval(lines[-1].removeprefix("ENVDUMP="))


def _setup(tmp_path, monkeypatch, env_extra: str = DUMP):
    """Two targets (``shop`` runs, ``other`` only exists) and the dashboard's
    secrets in this process's environment. Returns (targets file, shop URL)."""
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("SHOP_URL", url)
    monkeypatch.setenv("OTHER_URL", OTHER_URL)
    monkeypatch.setenv("DASHBOARD_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("DASHBOARD_ADMIN_PASSWORD", ADMIN_PASSWORD)
    ini = make_env(tmp_path / "env", linear(2), env_extra=env_extra)
    path = write_targets_file(tmp_path / "targets.toml", {
        "shop": {"tier": "staging", "alembic_ini": str(ini), "url_env": "SHOP_URL",
                 "env": {"SHOP_FLAG": OWN_FLAG}},
        "other": {"tier": "production", "alembic_ini": str(ini), "url_env": "OTHER_URL"}})
    return path, url


def _assert_no_dashboard_secret(text: str) -> None:
    for secret in (SECRET_KEY, ADMIN_PASSWORD, OTHER_URL, OTHER_PASSWORD, "0ther%3APw%40Zq81",
                   "DASHBOARD_SECRET_KEY", "DASHBOARD_ADMIN_PASSWORD", "OTHER_URL",
                   "DASHBOARD_DATABASE_URL"):
        assert secret.lower() not in text.lower(), f"{secret!r} reached the target's process"


def test_a_job_sees_only_its_own_environment(make_app, tmp_path, monkeypatch):
    path, url = _setup(tmp_path, monkeypatch)
    app = make_app(path, SECRET_KEY=SECRET_KEY)
    headers = token_headers(app, "pipeline", "operator")
    client = app.test_client()
    response = client.post("/api/v1/targets/shop/jobs", json={"command": "upgrade",
                                                              "revision": "head"},
                           headers=headers)
    assert response.status_code == 202, response.json
    job = wait_job(client, response.json["job"], headers)
    assert job["status"] == "succeeded", job["log"]
    _assert_no_dashboard_secret(job["log"])
    environment = _dumped(job["log"])
    assert environment["SHOP_FLAG"] == OWN_FLAG  # its own [env] table
    assert "SHOP_URL" in environment  # its own URL, under its own url_env name
    assert not [name for name in environment if name.startswith("DASHBOARD_")]


def test_run_agent_gives_the_minimal_environment(tmp_path, monkeypatch):
    path, url = _setup(tmp_path, monkeypatch)
    target = load_targets(path)["shop"]
    result = runner.run_agent(target, {"op": "offline_sql", "revision": "r001",
                                       "direction": "upgrade"}, url=url)
    assert "CREATE TABLE t_r001" in result.data["sql"]
    _assert_no_dashboard_secret(result.output)
    environment = _dumped(result.output)
    assert environment["SHOP_FLAG"] == OWN_FLAG
    assert environment["SHOP_URL"] == url  # the URL it was given for this operation
    assert environment["PYTHONHASHSEED"] == "0" and environment["PYTHONUNBUFFERED"] == "1"
    assert "PATH" in environment
    assert set(environment) <= set(runner.target_environment(target, url)) | {
        "LC_CTYPE"}  # Python may set LC_CTYPE itself (PEP 538 coercion)


def test_a_read_only_url_replaces_the_target_url_in_its_environment(tmp_path, monkeypatch):
    path, _ = _setup(tmp_path, monkeypatch)
    target = load_targets(path)["shop"]
    env = runner.target_environment(target, "sqlite:///read-only.db")
    assert env["SHOP_URL"] == "sqlite:///read-only.db"
    assert "OTHER_URL" not in env and "DASHBOARD_SECRET_KEY" not in env
    assert "SHOP_URL" not in runner.target_environment(target, None)


def test_prepared_runs_and_standbys_get_only_the_launch_environment(tmp_path, monkeypatch):
    path, url = _setup(tmp_path, monkeypatch)
    target = load_targets(path)["shop"]
    folder = tmp_path / "run"
    folder.mkdir()
    runner.write_run_request(target, "upgrade", "head", url=url, lock_name="shop",
                             folder=folder)
    launch = runner.read_launch(folder)
    _assert_no_dashboard_secret(json.dumps(launch["env"]))
    standby = runner.Standby()
    try:
        standby.prepare(launch)  # started now, while the secrets are in os.environ
        proc = standby.spawn(launch)
        output = proc.stdout.read().decode()
        assert proc.wait(timeout=60) == 0, output
    finally:
        standby.close()
    assert json.loads((folder / "result.json").read_text())["ok"], output
    _assert_no_dashboard_secret(output)
    assert _dumped(output)["SHOP_FLAG"] == OWN_FLAG


def test_scrubbing_catches_a_lower_cased_percent_encoded_password():
    url = "postgresql://svc:pA%3Ass%40WoRd9@db/x"
    for text in ("url=postgresql://svc:pa%3ass%40word9@db/x",
                 "PASSWORD PA%3ASS%40WORD9", "decoded pa:ss@word9", "raw pA:ss@WoRd9"):
        scrubbed = scrub_secrets(text, url)
        assert not re.search(r"(?i)word9", scrubbed), scrubbed
        assert "***" in scrubbed


def test_scrubbing_covers_every_secret_the_dashboard_knows():
    register_secrets(["Kz8-registered-Secret", "mysql://u:Reg%2FPw77@h/db", None, ""])
    text = ("key kz8-registered-secret / KZ8-REGISTERED-SECRET; url mysql://u:reg%2fpw77@h/db"
            " and reg/pw77")
    scrubbed = scrub_secrets(text, None)
    assert "registered" not in scrubbed.lower() and "pw77" not in scrubbed.lower(), scrubbed
    assert scrub_secrets("pw Kz8-registered-Secret", "sqlite:///x.db") == "pw ***"
    assert scrub_secrets("with extra XyZ-extra-123", None,
                         extra_secrets=["xyz-EXTRA-123"]) == "with extra ***"


def test_the_app_registers_its_secrets_for_scrubbing(make_app, tmp_path, monkeypatch):
    path, _ = _setup(tmp_path, monkeypatch, env_extra="")
    make_app(path, SECRET_KEY=SECRET_KEY)
    text = f"{SECRET_KEY.upper()} {ADMIN_PASSWORD} {OTHER_URL} {OTHER_PASSWORD.lower()}"
    scrubbed = scrub_secrets(text, None)
    _assert_no_dashboard_secret(scrubbed)
