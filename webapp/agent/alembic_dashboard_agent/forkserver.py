"""Agents forked from a warm server (standard library only, Linux).

A read operation (a plan, offline SQL, drift, an autogenerate preview)
used to pay a Python start-up and Alembic's imports (about 0.4 s of CPU)
every time. A fork server pays them once: ``python webapp/agent
--forkserver FD`` imports Alembic and SQLAlchemy, then waits on the control
socket ``FD``; for each run it forks a child that becomes the agent of
that run, in the run's working directory and with exactly the run's
environment, as a cold start would (:func:`serve`).

Isolation, in the order it holds:

- the server is started with only the interpreter's start-up settings
  (``PYTHON*``, the locale, ``PATH``): no target's ``[env]``, no URL, none
  of the dashboard's settings;
- the server never reads a run's order (environment, paths): the order goes
  over a socket pair the server passes on unread, and only the child reads
  it — so no run's URL is ever in the memory a later child is forked from;
- before it reads its order the child closes every other descriptor of the
  server (the control socket, the channels of runs still going);
- a child dies with the server (``PR_SET_PDEATHSIG``), and the server ends
  when its control socket closes (the process that started it is gone).

The dashboard's side is :mod:`.fork_client`: ``ForkServers`` (one server
per interpreter and start-up settings) and ``ForkedRun`` (a started run,
used like the :class:`subprocess.Popen` it replaces).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

from .launch import die_with_parent

# what an interpreter's start-up depends on: a server serves the runs whose
# environment agrees with it on these (the rest is set in the child)
_STARTUP_NAMES = ("PATH", "LANG", "LANGUAGE")
_STARTUP_PREFIXES = ("PYTHON", "LC_")
ANSWER_TIMEOUT = 30.0  # seconds for a child to say it started


def startup_environment(env: dict[str, str]) -> dict[str, str]:
    """The part of a run's environment ``env`` fixed when its interpreter
    starts (``PYTHON*``, ``LC_*``, ``LANG``, ``LANGUAGE``, ``PATH``): what
    its fork server is started with."""
    return {k: v for k, v in env.items()
            if k in _STARTUP_NAMES or k.startswith(_STARTUP_PREFIXES)}


def server_key(launch: dict) -> str:
    """Which fork server can start ``launch`` (:func:`.launch.read_launch`):
    interpreter, agent, and :func:`startup_environment`."""
    return json.dumps([launch["argv"][:2], startup_environment(launch["env"])],
                      sort_keys=True)


# -- the server (in the target's interpreter) --------------------------------

# what every run imports (Alembic, SQLAlchemy), then what most import next:
# the logging config, autogenerate, the dialects and the drivers installed here
WARM_MODULES = ("alembic.command", "alembic.runtime.environment", "alembic.script",
                "sqlalchemy", "logging.config", "alembic.autogenerate",
                "sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.mysql",
                "sqlalchemy.dialects.postgresql", "sqlite3", "pymysql", "psycopg", "psycopg2")


def warm_up() -> None:
    """Import :data:`WARM_MODULES` (a fork server, and a standby before its
    job); a module this interpreter lacks is left to the run that needs it."""
    import importlib

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - e.g. not installed here: its runs import it
            pass

def serve(control_fd: int) -> list[str]:
    """``python webapp/agent --forkserver FD``: import what every run needs,
    then fork one child per run received on the control socket ``FD``.

    The server loops until its control socket closes (then exits, status
    0). It returns only in a child: the argv of the run the child is to
    become (``[program, REQUEST.json, RESULT.json]``), once the child is in
    the run's working directory with exactly the run's environment.

    Per run the control socket carries two descriptors (``SCM_RIGHTS``): a
    channel socket and the write end of the run's output pipe. The child
    reads the order ``{"args", "env", "cwd"}`` (one JSON line) from the
    channel and answers ``pid N`` (or ``error TEXT``); the server writes the
    child's exit status (``exit N``) to the channel when it has ended.
    """
    import gc

    warm_up()
    gc.freeze()  # a child's collections leave the server's objects (and pages) alone
    control = socket.socket(fileno=control_fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    channels: dict[int, socket.socket] = {}  # child pid -> its channel
    while True:
        ready, _, _ = select.select([control, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _report_ended(channels)
        if control not in ready:
            continue
        message, fds, _flags, _addr = socket.recv_fds(control, 16, 2)
        if not message:
            raise SystemExit(0)  # the process that started us is gone
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        channel, output = socket.socket(fileno=fds[0]), fds[1]
        pid = os.fork()
        if pid == 0:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (wake_r, wake_w):
                os.close(fd)
            control.close()
            for other in channels.values():
                other.close()
            return _become(channel, output)
        os.close(output)
        channels[pid] = channel


def _report_ended(channels: dict[int, socket.socket]) -> None:
    """Reap the children that ended; tell each one's requester its status."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel = channels.pop(pid, None)
        if channel is None:
            continue
        try:
            channel.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:
            pass  # the requester stopped waiting
        channel.close()


def _become(channel: socket.socket, output: int) -> list[str]:
    """In a fresh child: take the order from ``channel``, become its run."""
    die_with_parent()
    if os.getppid() == 1:
        os._exit(0)  # the server died before the line above could tie us to it
    reader = channel.makefile("rb")
    order = json.loads(reader.readline() or b"null")
    reader.close()
    if not order:
        os._exit(0)  # the requester gave up before sending it
    try:
        os.chdir(order["cwd"])
    except OSError as exc:
        channel.sendall(f"error {exc}\n".encode())
        os._exit(127)
    os.environ.clear()  # exactly the run's environment, as a cold start gets it
    os.environ.update(order["env"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(output, 1)
    os.dup2(output, 2)
    os.close(output)
    channel.sendall(f"pid {os.getpid()}\n".encode())
    channel.close()
    sys.argv = [order["program"], *order["args"]]  # as a cold start has them
    return list(sys.argv)
