"""Read operations start warm (issue 18, item 5): each read's agent (offline
SQL, a plan, drift) is forked from a fork server of the web process that
has Python and Alembic started already (``webapp.core.runner.AGENT_FORKSERVERS``,
``alembic_dashboard_agent.forkserver`` and ``fork_client``).

What must hold: the child runs exactly as a cold start would (the target's
working directory, exactly its environment); the server holds no target's
environment and never a run's URL, not even in its memory (each order goes
past it to the child unread); the server outlives the thread that started
it and dies, with the runs it forked, when its dashboard process dies; a
run over its time limit is killed; a forked dashboard process starts its
own server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support.common import ROOT
from support.envtools import linear, make_env, sqlite_url, write_targets_file

from webapp.core import runner
from webapp.core.targets import load_targets

# env.py appends a JSON line (pid, parent pid, cwd, environment) to PID_LOG,
# and sleeps SLEEP_SECONDS when the run's request says so (a revision of "r001")
ENV_EXTRA = ('import json as _json\n'
             'open(os.environ["PID_LOG"], "a").write(_json.dumps({"pid": os.getpid(), '
             '"ppid": os.getppid(), "cwd": os.getcwd(), "env": dict(os.environ)}) + "\\n")\n'
             'if os.environ.get("SLEEP_SECONDS"):\n'
             '    import time as _time; _time.sleep(float(os.environ["SLEEP_SECONDS"]))')


def _target(tmp_path, monkeypatch, **env):
    url = sqlite_url(tmp_path / "shop.db")
    monkeypatch.setenv("AGENT_STANDBY_URL", url)
    pid_log = tmp_path / "agent-pids"
    ini = make_env(tmp_path / "env", linear(2), env_extra=ENV_EXTRA)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "AGENT_STANDBY_URL",
        "env": {"PID_LOG": str(pid_log), **env}}})
    return load_targets(targets)["shop"], url, pid_log


@pytest.fixture
def target(tmp_path, monkeypatch):
    """``(target, url, pid log)`` with one fork server allowed, none after."""
    runner.configure_agent_forkservers(0)
    runner.configure_agent_forkservers(1)
    yield _target(tmp_path, monkeypatch)
    runner.configure_agent_forkservers(0)


def _runs(pid_log: Path) -> list[dict]:
    return [json.loads(line) for line in pid_log.read_text().splitlines()]


def _server_pids() -> list[int]:
    servers = runner.AGENT_FORKSERVERS._servers
    return [server.proc.pid for server in servers.values() if server.proc.poll() is None]


def test_each_read_is_forked_from_one_warm_server(target):
    shop, url, pid_log = target
    first = runner.offline_sql(shop, "r000", "upgrade", url=url)
    second = runner.offline_sql(shop, "r001", "upgrade", url=url)
    assert "CREATE TABLE" in first and "r001" in second
    (server,) = _server_pids()
    runs = _runs(pid_log)
    assert [run["ppid"] for run in runs] == [server, server]
    assert runs[0]["pid"] != runs[1]["pid"] != server


def test_a_forked_run_has_exactly_the_targets_environment_and_directory(target):
    """As a cold start: the target's working directory and exactly
    runner.target_environment (the URL under its url_env, the [env] table,
    the base), nothing of the server's or of this process's."""
    shop, url, pid_log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    (run,) = _runs(pid_log)
    expected = runner.target_environment(shop, runner.with_connect_timeout(url))
    assert run["env"] == expected
    assert run["cwd"] == str(shop.working_directory)


def test_the_server_holds_no_url_and_no_targets_environment(target):
    """Not in its environment, and not in its memory: after two reads the
    server's writable memory holds neither the URL nor the target's [env]."""
    shop, url, pid_log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    runner.offline_sql(shop, "r001", "upgrade", url=url)
    (server,) = _server_pids()
    environ = Path(f"/proc/{server}/environ").read_bytes()
    assert b"PID_LOG" not in environ and b"AGENT_STANDBY_URL" not in environ
    assert url.encode() not in environ and b"DASHBOARD_" not in environ
    memory = _writable_memory(server)
    assert len(memory) > 1_000_000  # the scan itself works (the heap is read)
    assert str(pid_log).encode() not in memory
    assert url.encode() not in memory and b"AGENT_STANDBY_URL" not in memory


def _writable_memory(pid: int) -> bytes:
    """The contents of ``pid``'s writable mappings (heap, stack, data)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "w" not in perms:
                continue
            start, end = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, OverflowError, ValueError):
                continue
    return b"".join(chunks)


def test_the_server_outlives_the_thread_that_started_it(target):
    """A child started from a thread gets PR_SET_PDEATHSIG against that
    thread; the server does not use it (it ends with its control socket)."""
    shop, url, pid_log = target
    asked = threading.Thread(target=runner.offline_sql, args=(shop, "r000", "upgrade"),
                             kwargs={"url": url})
    asked.start()
    asked.join(60)
    (server,) = _server_pids()
    time.sleep(0.5)
    runner.offline_sql(shop, "r001", "upgrade", url=url)
    assert _server_pids() == [server]
    assert [run["ppid"] for run in _runs(pid_log)] == [server, server]


def test_a_run_over_its_time_limit_is_killed(tmp_path, monkeypatch):
    runner.configure_agent_forkservers(1)
    try:
        shop, url, pid_log = _target(tmp_path, monkeypatch, SLEEP_SECONDS="30")
        started = time.monotonic()
        with pytest.raises(runner.TargetProcessError, match="timed out after 1 s"):
            runner.run_agent(shop, {"op": "offline_sql", "revision": "r000",
                                    "direction": "upgrade"}, url=url, timeout=1)
        assert time.monotonic() - started < 15
        (run,) = _runs(pid_log)
        assert run["ppid"] in _server_pids()
        _wait_gone(run["pid"])
    finally:
        runner.configure_agent_forkservers(0)


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and not _zombie(pid):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_server_and_its_runs_die_with_the_dashboard_process(tmp_path, monkeypatch):
    """A dashboard process (here a small script) SIGKILLed during a read:
    its fork server and the read it forked are gone soon after."""
    shop, url, pid_log = _target(tmp_path, monkeypatch, SLEEP_SECONDS="60")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from webapp.core import runner
        from webapp.core.targets import load_targets
        runner.configure_agent_forkservers(1)
        shop = load_targets({str(tmp_path / "targets.toml")!r})["shop"]
        runner.offline_sql(shop, "r000", "upgrade", url={url!r})
    """)
    dashboard = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while not pid_log.exists() or not pid_log.read_text().strip():
            assert time.monotonic() < deadline, "the read never started"
            time.sleep(0.05)
        (run,) = _runs(pid_log)
        server = run["ppid"]
        assert server != dashboard.pid and _parent(server) == dashboard.pid
    finally:
        dashboard.send_signal(signal.SIGKILL)
        dashboard.wait()
    _wait_gone(server)
    _wait_gone(run["pid"])


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_no_server_when_turned_off(target):
    shop, url, pid_log = target
    runner.configure_agent_forkservers(0)
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    assert runner.AGENT_FORKSERVERS._servers == {}
    assert _runs(pid_log)[0]["ppid"] == os.getpid()  # a cold start, our own child


def test_a_server_that_died_is_replaced(target):
    shop, url, pid_log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    (server,) = _server_pids()
    os.kill(server, signal.SIGKILL)
    _wait_gone(server)
    assert "r001" in runner.offline_sql(shop, "r001", "upgrade", url=url)
    (again,) = _server_pids()
    assert again != server and _runs(pid_log)[-1]["ppid"] == again


def test_a_forked_child_does_not_share_its_parents_server(target):
    """A Celery prefork child (or any fork) starts its own server: the
    parent's control socket is never written by two processes."""
    shop, url, pid_log = target
    runner.offline_sql(shop, "r000", "upgrade", url=url)
    (parents,) = _server_pids()
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
    last = _runs(pid_log)[-1]
    assert last["ppid"] != parents and _parent(last["ppid"]) in (child, 1)
    assert _server_pids() == [parents]
    runner.offline_sql(shop, "r001", "upgrade", url=url)
    assert _runs(pid_log)[-1]["ppid"] == parents


def test_a_missing_working_directory_is_said_as_for_a_cold_start(target, tmp_path):
    shop, url, _log = target
    import dataclasses

    gone = dataclasses.replace(shop, cwd=tmp_path / "gone")
    with pytest.raises(runner.TargetProcessError) as failed:
        runner.offline_sql(gone, "r000", "upgrade", url=url)
    assert failed.value.error_type == "FileNotFoundError"
    assert re.search(r"not found", str(failed.value))
