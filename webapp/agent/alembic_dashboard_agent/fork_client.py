"""The dashboard's side of the agent fork servers (standard library only;
the server is :mod:`.forkserver`): :class:`ForkServers` starts and keeps
them, :class:`ForkedRun` is one run forked by a server."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

from .forkserver import ANSWER_TIMEOUT, server_key, startup_environment
from .launch import _popen


class ForkedRun:
    """A run forked by a fork server, used like :class:`subprocess.Popen`
    (``pid``, ``stdout``, ``communicate``, ``wait``, ``poll``, ``kill``,
    ``returncode``). It is not this process's child: its exit status comes
    from the server, and :meth:`kill` signals it through a pidfd, so a pid
    reused after its end is never hit.

    :raises OSError: the server did not start it (``FileNotFoundError`` when
        its working directory is missing, as :class:`subprocess.Popen` says).
    """

    def __init__(self, channel: socket.socket, output: int, args: list[str]) -> None:
        self.args = args
        self.returncode: int | None = None
        self._channel = channel
        self._pending = b""  # read from the channel, not yet a whole line
        self._pidfd: int | None = None
        self.stdout = os.fdopen(output, "rb")
        self._read = bytearray()
        try:
            answer = self._line(ANSWER_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired):
            answer = ""
        if not answer.startswith("pid "):
            self._close()
            if answer.startswith("error "):
                raise FileNotFoundError(answer[6:].strip())
            raise ConnectionError("the fork server did not start the run")
        self.pid = int(answer.split()[1])
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (OSError, AttributeError):
            pass  # gone already, or an old kernel: kill() falls back to its pid

    def _line(self, timeout: float | None) -> str:
        """The channel's next line ("" at its end).

        :raises subprocess.TimeoutExpired: none within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._channel], [], [], left)
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            chunk = self._channel.recv(4096)
            if not chunk:
                return ""
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def _close(self) -> None:
        for closable in (self._channel, self.stdout):
            try:
                closable.close()
            except OSError:
                pass
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def poll(self) -> int | None:
        """The exit status if the run has ended (and was reported), else None."""
        if self.returncode is None:
            try:
                self.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status, once the server reports it (-9 when the server
        itself is gone, its children with it).

        :raises subprocess.TimeoutExpired: not ended within ``timeout`` seconds.
        """
        if self.returncode is not None:
            return self.returncode
        try:
            line = self._line(timeout)
        except OSError:
            line = ""
        self.returncode = int(line.split()[1]) if line.startswith("exit ") else -9
        self._close()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        """Read the run's output to its end, then wait for its status.

        :return: ``(output, None)``: stdout and stderr merged, as the run's
            :class:`subprocess.Popen` with ``stderr=STDOUT`` gives them.
        :raises subprocess.TimeoutExpired: not ended within ``timeout``
            seconds; the output so far is kept for the next call.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.stdout.closed:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0, bytes(self._read))
            ready, _, _ = select.select([self.stdout], [], [], left)
            if not ready:
                continue
            chunk = self.stdout.read1(65536)  # all it buffered: select sees the rest
            if not chunk:
                self.stdout.close()
                break
            self._read += chunk
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.wait(left)
        return bytes(self._read), None

    def kill(self) -> None:
        """SIGKILL the run, if it is still going."""
        if self.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Server:
    def __init__(self, launch: dict) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [*launch["argv"][:2], "--forkserver", str(theirs.fileno())],
                pass_fds=[theirs.fileno()], cwd="/", env=startup_environment(launch["env"]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        finally:
            theirs.close()
        self.control = ours

    def fork(self, launch: dict) -> ForkedRun:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        try:
            socket.send_fds(self.control, [b"r"], [theirs.fileno(), out_w])
        except OSError:
            os.close(out_r)
            mine.close()
            raise
        finally:
            theirs.close()
            os.close(out_w)
        order = {"program": launch["argv"][1], "args": launch["argv"][2:4],
                 "env": launch["env"], "cwd": launch["cwd"]}
        mine.sendall((json.dumps(order) + "\n").encode())
        return ForkedRun(mine, out_r, launch["argv"])

    def close(self) -> None:
        self.control.close()  # the server exits at once
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class ForkServers:
    """The fork servers of this process: one per interpreter, agent and
    start-up settings (:func:`server_key`), started at the first run that
    needs it. Thread-safe; a forked child of this process starts its own.

    :param limit: most servers kept (the oldest makes room); 0: none, every
        run starts cold (:func:`.launch.spawn_prepared_run`'s way).
    """

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._forget()

    def _forget(self) -> None:
        self._pid = os.getpid()
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()

    def spawn(self, launch: dict):
        """Start ``launch`` (:func:`.launch.read_launch`'s shape): forked from
        its server when :attr:`limit` allows one, else (or when the server
        cannot, e.g. an interpreter older than Python 3.9) as a cold process.

        :return: a :class:`ForkedRun` or a :class:`subprocess.Popen`.
        :raises OSError: the run cannot start (interpreter or working
            directory missing).
        """
        if self._pid != os.getpid():
            self._forget()
        if self.limit > 0:
            key = server_key(launch)
            with self._lock:
                server = self._servers.pop(key, None)
                if server is None or server.proc.poll() is not None:
                    while len(self._servers) >= self.limit:
                        self._servers.pop(next(iter(self._servers))).close()
                    server = _Server(launch)
                self._servers[key] = server  # the newest last
                try:
                    return server.fork(launch)
                except FileNotFoundError:  # the run's working directory is missing
                    raise
                except OSError:  # this server cannot fork (it died, or is too old): start cold
                    self._servers.pop(key).close()
        return _popen(launch, launch["argv"], subprocess.DEVNULL)

    def close(self) -> None:
        """Stop every server (runs still going are killed with them)."""
        if self._pid != os.getpid():
            self._forget()
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.close()
