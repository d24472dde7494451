"""Read operations start warm (issue 18, item 5): after an agent run (offline
SQL, a plan, drift), the web process has the next agent like it started in
the background (``webapp.core.runner.AGENT_STANDBYS``), so the next read runs
in a process that existed before it was asked for. The standby holds no
database URL until its run hands one over, and it outlives the thread that
asked for it (``PR_SET_PDEATHSIG`` fires when the starting *thread* ends)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support.envtools import linear, make_env, sqlite_url, write_targets_file

from webapp.core import runner
from webapp.core.targets import load_targets

# env.py appends "<pid> <offline>" to the file named by PID_LOG
PID_LOG = ('open(os.environ["PID_LOG"], "a").write('
           'f"{os.getpid()} {context.is_offline_mode()}\\n")')


@pytest.fixture
def target(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("AGENT_STANDBY_URL", url)
    pid_log = tmp_path / "agent-pids"
    ini = make_env(tmp_path / "env", linear(2), env_extra=PID_LOG)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "AGENT_STANDBY_URL",
        "env": {"PID_LOG": str(pid_log)}}})
    runner.configure_agent_standbys(1)
    yield load_targets(targets)["shop"], url, pid_log
    runner.configure_agent_standbys(0)


def _waiting(timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with runner.AGENT_STANDBYS._lock:
            waiting = list(runner.AGENT_STANDBYS._waiting.values())
        if waiting:
            (proc,) = waiting
            return proc
        time.sleep(0.05)
    raise AssertionError(f"no standby agent within {timeout} s")


def test_the_next_read_runs_in_the_agent_started_ahead(target):
    shop, url, pid_log = target
    first = runner.offline_sql(shop, "r000", "upgrade", url=url)
    standby = _waiting()
    second = runner.offline_sql(shop, "r001", "upgrade", url=url)
    assert "CREATE TABLE" in first and "r001" in second
    pids = [line.split()[0] for line in pid_log.read_text().splitlines()]
    assert pids[-1] == str(standby.pid) and pids[0] != pids[-1]


def test_a_standby_outlives_the_thread_that_asked_for_it(target):
    """The standby is started by one long-lived thread, not the caller's: a
    child started from a thread that ends is killed with that thread."""
    shop, url, _log = target
    asked = threading.Thread(target=runner.offline_sql, args=(shop, "r000", "upgrade"),
                             kwargs={"url": url})
    asked.start()
    asked.join(60)
    standby = _waiting()
    time.sleep(1.0)
    assert standby.poll() is None, f"the standby died (status {standby.returncode})"


def test_the_standby_holds_no_database_url(target):
    shop, url, _log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    standby = _waiting()
    environ = Path(f"/proc/{standby.pid}/environ").read_bytes()
    assert b"PID_LOG=" in environ  # the target's [env]
    assert b"AGENT_STANDBY_URL" not in environ and url.encode() not in environ
    assert b"DASHBOARD_" not in environ


def test_no_standby_when_turned_off(target):
    shop, url, _log = target
    runner.configure_agent_standbys(0)
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    time.sleep(0.5)
    assert runner.AGENT_STANDBYS._waiting == {}


def test_a_forked_child_does_not_share_its_parents_standbys(target):
    """A Celery prefork child (or any fork) starts with no standby: a read
    in the child starts its own agent; the parent's standby stays waiting.
    (Before the per-process state this held too, by way of ``poll()``
    answering 0 for a process that is not the caller's child.)"""
    import os

    shop, url, pid_log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    parents = _waiting()
    child = os.fork()
    if child == 0:  # never back into pytest from the child
        code = 1
        try:
            runner.offline_sql(shop, "r001", "upgrade", url=url)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    last = pid_log.read_text().splitlines()[-1].split()[0]
    assert last != str(parents.pid)
    assert _waiting() is parents and parents.poll() is None
