"""Start a prepared run (standard library only: the job process uses this
before it imports anything heavy, and the dashboard uses it too)."""

from __future__ import annotations

import json
import os
import subprocess
import threading


def die_with_parent() -> None:
    """In the child: get SIGKILL when the parent (the job's process) dies
    (Linux ``PR_SET_PDEATHSIG``); elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the reaper still finds the job's process gone


def read_launch(folder) -> dict:
    """``folder/launch.json``: ``{"argv", "cwd", "env", "url_env"}`` of a
    prepared run; ``env`` is the child's complete environment, ``url_env``
    the name of its variable holding the database URL (or None)."""
    with open(os.path.join(folder, "launch.json"), encoding="utf-8") as f:
        return json.load(f)


def _popen(launch: dict, argv: list[str], stdin, env: dict | None = None) -> subprocess.Popen:
    # exactly the prepared environment, never merged with ours: the process
    # starting this (a job process, a Celery worker) holds the dashboard's
    # secrets and other targets' URLs, and the target's code may print them
    return subprocess.Popen(argv, cwd=launch["cwd"], env=dict(launch["env"] if env is None
                                                               else env),
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def spawn_prepared_run(folder) -> subprocess.Popen:
    """Start the run prepared in ``folder`` (its ``launch.json``: argv, cwd, env).

    The child holds the target's database lock for the whole run and dies
    with its parent, so killing the job's process never leaves a migration
    running unattended. Its output (stdout and stderr merged) is readable
    line by line from ``proc.stdout``; the JSON result lands in
    ``folder/result.json``.
    """
    launch = read_launch(folder)
    return _popen(launch, launch["argv"], subprocess.DEVNULL)


def standby_environment(launch: dict) -> dict[str, str]:
    """The environment a standby for ``launch`` starts with: the run's, less
    its database URL (the variable named by ``launch["url_env"]``), which
    the run hands over with the rest when it takes the standby."""
    return {k: v for k, v in launch["env"].items() if k != launch.get("url_env")}


def launch_key(launch: dict) -> str:
    """What makes two prepared runs (:func:`read_launch`) startable by the
    same standby process: interpreter, agent, working directory and the
    environment apart from the database URL (so the targets of one project,
    one per database, share standbys)."""
    return json.dumps([launch["argv"][:2], launch["cwd"], standby_environment(launch)],
                      sort_keys=True)


class Standby:
    """Agent processes started ahead of their runs: one per interpreter +
    agent + working directory + environment (less the database URL),
    already past Python's start-up and Alembic's imports, so a run starts at
    once (``python webapp/agent --standby``). A Celery worker and a
    standby job process keep one for their next job (read operations use
    fork servers instead: :mod:`.forkserver`).

    Thread-safe. A standby dies with the process that started it.

    :param limit: most standbys kept waiting (the oldest makes room); None
        for no limit, 0 for none at all (:meth:`prepare` does nothing).
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self._forget()

    def _forget(self) -> None:
        """Start empty (also in a forked child: the standbys and their pipes
        belong to the parent, never to two processes)."""
        self._pid = os.getpid()
        self._waiting: dict[str, subprocess.Popen] = {}  # oldest first
        self._lock = threading.Lock()

    def _own(self) -> None:
        if self._pid != os.getpid():
            self._forget()

    def spawn(self, launch: dict) -> subprocess.Popen:
        """Like :func:`spawn_prepared_run` for ``launch`` (:func:`read_launch`),
        through a waiting standby when one matches (a standby that died
        meanwhile is replaced by a new process).

        :raises OSError: no standby matches and the process cannot start
            (interpreter or working directory missing).
        """
        self._own()
        with self._lock:
            proc = self._waiting.pop(launch_key(launch), None)
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                order = {"args": launch["argv"][2:4], "env": launch["env"]}
                proc.stdin.write((json.dumps(order) + "\n").encode())
                proc.stdin.close()
                proc.stdin = None  # like a process started without one (communicate())
                return proc
            except OSError:  # it died between poll() and the write
                proc.kill()
        return _popen(launch, launch["argv"], subprocess.DEVNULL)

    def prepare(self, launch: dict) -> None:
        """Start a standby for the next run like ``launch`` (call after a run
        ended, so it never competes with a migration for the CPU). A
        standby that cannot start (the interpreter is gone) is not kept."""
        if self.limit == 0:
            return
        self._own()
        key = launch_key(launch)
        with self._lock:
            old = self._waiting.get(key)
            if old is not None and old.poll() is None:
                return
            self._waiting.pop(key, None)
            while self.limit is not None and len(self._waiting) >= self.limit:
                dismiss(self._waiting.pop(next(iter(self._waiting))))
            try:
                self._waiting[key] = _popen(launch, [*launch["argv"][:2], "--standby"],
                                            subprocess.PIPE, standby_environment(launch))
            except OSError:
                pass  # the run itself will say why it cannot start

    def close(self) -> None:
        """Stop every waiting standby."""
        self._own()
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for proc in waiting:
            dismiss(proc)
            proc.wait(timeout=10)


def dismiss(proc: subprocess.Popen) -> None:
    """Tell an unused standby to go: its stdin closes, it exits on its own."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass
