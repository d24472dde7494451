"""How a confirmed job runs: chosen once, in ``create_app`` (:func:`init_app`).

A launcher takes a job that holds its target's guard and gets it running
somewhere; the job's own process (or thread) records the outcome and sends
:data:`webapp.services.events.job_finished`.

- :class:`LocalProcessLauncher` — ``python webapp/worker.py JOB_ID FOLDER``
  in its own session on this host (the default without a broker);
- :class:`CeleryLauncher` — the job is sent **by task name** to its target's
  Celery queue (:mod:`webapp.services.queue`); a worker beside the database
  (``celery -A webapp.tasks worker``, an entry point nothing imports) takes it;
- :class:`InProcessLauncher` — the job's process body runs in a thread of
  this process, with its own app context: for tests whose subject is not the
  process boundary.

The choice follows the ``BROKER_URL`` setting (Celery when set, local
otherwise), unless ``JOB_LAUNCHER`` (``"local"``, ``"celery"`` or
``"inprocess"``) says otherwise. This is the one place that reads
``BROKER_URL`` to decide how jobs run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from flask import Flask, current_app
from sqlalchemy import delete

from ..config import ConfigurationError
from ..core.runner import (
    AGENT_FORKSERVERS,
    dismiss,
    launch_key,
    launch_spec,
    read_launch,
    write_launch,
    write_run_request,
)
from ..core.targets import Target
from ..extensions import db
from ..models import Job, TargetGuard
from . import liveness, queue
from .refusals import Reason, Refused

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXTENSION = "alembic_dashboard.launcher"
CHOICES = ("local", "celery", "inprocess")
# a standby is handed jobs this long after its start, then replaced (it exits
# by itself after worker.STANDBY_IDLE_SECONDS, 600 s: a minute of margin)
STANDBY_USE_SECONDS = 540.0


class Launcher(Protocol):
    """Gets a confirmed job running (see the module docstring)."""

    def launch(self, job: Job, target: Target, url: str) -> None:
        """Start ``job`` (queued, holding ``target``'s guard; committed) on
        ``target`` whose database is at ``url``.

        :raises Refused: nothing was started (the job is dropped first).
        """

    def prepare(self, target: Target, url: str | None) -> None:
        """Get ready for a job on ``target`` soon (a plan was just shown):
        a launcher that can start one ahead does; the others do nothing."""


def drop_unstarted(job: Job) -> None:
    """Remove a job that never started, and its guard (committed)."""
    db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job.id))
    db.session.execute(delete(Job).where(Job.id == job.id))
    db.session.commit()


def _prepare(job: Job, target: Target, url: str) -> Path:
    """A private folder (0700) holding the agent's run request for ``job``."""
    folder = Path(tempfile.mkdtemp(prefix=f"alembic-job-{job.id}-"))
    write_run_request(target, job.command, job.revision, url=url,
                      lock_name=target.name, folder=folder,
                      extra=job.run_extra())
    return folder


def worker_environment() -> dict[str, str]:
    """Environment for a job process: the same dashboard database, targets
    file and instance folder as this app (tests configure them in code)."""
    config = current_app.config
    env = dict(os.environ)
    env["DASHBOARD_DATABASE_URL"] = config["SQLALCHEMY_DATABASE_URI"]
    env["DASHBOARD_INSTANCE_PATH"] = current_app.instance_path
    env["DASHBOARD_SECRET_KEY"] = config["SECRET_KEY"]
    if config.get("TARGETS_FILE"):
        env["DASHBOARD_TARGETS"] = str(config["TARGETS_FILE"])
    else:
        env.pop("DASHBOARD_TARGETS", None)
    # the niceness job processes are relative to (kept by jobs they start)
    env.setdefault("DASHBOARD_JOB_BASE_NICENESS", str(os.getpriority(os.PRIO_PROCESS, 0)))
    return env


class LocalProcessLauncher:
    """Start ``webapp/worker.py JOB_ID FOLDER`` on this host, in its own
    session, so it outlives the web request and the gunicorn worker that
    started it. The job row records at once which process runs it (host,
    pid, start time): the reaper's proof of life that needs no heartbeat.
    Its output goes to the instance's ``jobs.log``.

    Warm standbys: when a job's process has ended, and when a plan is shown
    (:meth:`prepare`), up to ``standbys`` job processes wait ahead of their
    jobs (``worker.py --standby``, each with the target's agent past its
    start-up), one per target interpreter / directory / environment; a job
    whose launch matches one is handed to it, so its migration starts at
    once. A standby is tied to this process by its stdin: it exits when this
    process ends, when it is pushed out by a newer one, or after
    ``worker.STANDBY_IDLE_SECONDS`` unused.

    :param standbys: how many standbys this process keeps at most (0: none,
        every job starts cold).
    """

    name = "local"

    def __init__(self, standbys: int = 2) -> None:
        self.standbys = standbys
        self._waiting: dict[str, tuple[subprocess.Popen, float]] = {}  # oldest first
        self._lock = threading.Lock()

    def _start(self, args: list[str], stdin) -> subprocess.Popen:
        log_path = Path(current_app.instance_path) / "jobs.log"
        with open(log_path, "a", encoding="utf-8",
                  opener=lambda p, f: os.open(p, f, 0o600)) as log:  # private, like instance/
            return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "webapp" / "worker.py"),
                                     *args], cwd=PROJECT_ROOT, env=worker_environment(),
                                    stdin=stdin, stdout=log, stderr=log,
                                    start_new_session=True)

    def _hand_over(self, job_id: int, folder: Path) -> subprocess.Popen | None:
        """The waiting standby for ``folder``'s launch, told to run job
        ``job_id``; None when there is none (or it is about to expire)."""
        with self._lock:
            proc, since = self._waiting.pop(launch_key(read_launch(folder)), (None, 0.0))
        if proc is None:
            return None
        if proc.poll() is not None or time.monotonic() - since > STANDBY_USE_SECONDS:
            dismiss(proc)
            return None
        try:
            assert proc.stdin is not None
            proc.stdin.write(f"{job_id} {folder}\n".encode())
            proc.stdin.close()
        except OSError:  # it died between poll() and the write
            proc.kill()
            return None
        return proc

    def launch(self, job: Job, target: Target, url: str) -> None:
        """See :meth:`Launcher.launch`; never refuses. When the job's process
        ends, a standby is prepared for the next job like it
        (:meth:`prepare`): not before, so that its start-up never takes CPU
        from the migration."""
        folder = _prepare(job, target, url)
        proc = self._hand_over(job.id, folder) or self._start(
            [str(job.id), str(folder)], subprocess.DEVNULL)
        job.worker_pid, job.worker_host = proc.pid, socket.gethostname()[:255]
        job.worker_start = liveness.process_start_token(proc.pid)
        db.session.commit()
        if self.standbys > 0:
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            threading.Thread(target=self._prepare_after, args=(app, proc, target, url),
                             name=f"standby-after-job-{job.id}", daemon=True).start()

    def _prepare_after(self, app: Flask, proc: subprocess.Popen, target: Target,
                       url: str) -> None:
        proc.wait()  # also reaps it
        with app.app_context():
            try:
                self.prepare(target, url)
            except OSError as exc:  # the instance folder is gone: the next job starts cold
                app.logger.warning("no standby after a job on %s: %s", target.name, exc)

    def prepare(self, target: Target, url: str | None) -> None:
        """Have a standby wait for a job on ``target`` (database at ``url``),
        unless one already does or :attr:`standbys` is 0; the oldest
        standby makes room when there are as many as allowed."""
        if self.standbys <= 0:
            return
        folder = Path(tempfile.mkdtemp(prefix="alembic-standby-"))
        launch = launch_spec(target, url, folder)
        key = launch_key(launch)
        with self._lock:
            proc, since = self._waiting.get(key, (None, 0.0))
            if proc is not None and proc.poll() is None and \
                    time.monotonic() - since < STANDBY_USE_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                return
            write_launch(launch, folder)
            self._waiting.pop(key, None)
            while len(self._waiting) >= self.standbys:
                dismiss(self._waiting.pop(next(iter(self._waiting)))[0])
            self._waiting[key] = (self._start(["--standby", str(folder)], subprocess.PIPE),
                                  time.monotonic())

    def close(self) -> None:
        """Dismiss every waiting standby (they exit; nothing else changes)."""
        with self._lock:
            waiting, self._waiting = list(self._waiting.values()), {}
        for proc, _ in waiting:
            dismiss(proc)


class CeleryLauncher:
    """Send the job to its target's Celery queue (``queue`` in the targets
    file, default :data:`webapp.services.queue.DEFAULT_QUEUE`) at
    ``broker_url``, by task name; the worker that takes it records itself.

    :param broker_url: e.g. ``redis://127.0.0.1:6379/0``.
    """

    name = "celery"

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    def launch(self, job: Job, target: Target, url: str) -> None:
        """See :meth:`Launcher.launch`.

        :raises Refused: :attr:`Reason.UNREACHABLE` when the broker cannot be
            reached (the job is dropped: nothing was queued).
        """
        try:
            queue.send_job(self.broker_url, job.id, target.queue)
        except Exception as exc:  # kombu's OperationalError and friends
            drop_unstarted(job)
            raise Refused(Reason.UNREACHABLE, f"The job queue cannot be reached: "
                          f"{type(exc).__name__}: {exc}") from None

    def prepare(self, target: Target, url: str | None) -> None:
        """Nothing: the queue's workers keep their own standby agents."""

    def send_advance(self, rollout_id: int, rollout_queue: str | None) -> None:
        """Queue "advance rollout ``rollout_id``" on ``rollout_queue``: a job's
        end is recorded by a worker beside one database, which may not reach
        the next steps' databases.

        :raises kombu.exceptions.OperationalError: the broker cannot be reached.
        """
        queue.send_advance(self.broker_url, rollout_id, rollout_queue)


class InProcessLauncher:
    """Run the job's process body (what ``webapp/worker.py`` does: start the
    prepared migration, follow it with
    :func:`webapp.services.job_process.execute`) in a daemon thread of this
    process, in an app context of its own. The job records this process as
    its worker, so the reaper sees it alive while the process lives.
    :meth:`join` waits for the threads started so far (tests)."""

    name = "inprocess"

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def launch(self, job: Job, target: Target, url: str) -> None:
        """See :meth:`Launcher.launch`; never refuses."""
        folder = _prepare(job, target, url)
        job.worker_pid, job.worker_host = os.getpid(), socket.gethostname()[:255]
        job.worker_start = liveness.process_start_token(os.getpid())
        db.session.commit()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        thread = threading.Thread(target=self._run, args=(app, job.id, folder),
                                  name=f"job-{job.id}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def prepare(self, target: Target, url: str | None) -> None:
        """Nothing: a thread starts at once."""

    @staticmethod
    def _run(app: Flask, job_id: int, folder: Path) -> None:
        from . import job_process
        from .catalog import get_catalog

        started = time.time()
        with app.app_context():
            proc, start_error = None, None
            try:  # forked from this process's agent fork server, when it has one
                proc = AGENT_FORKSERVERS.spawn(read_launch(folder))
            except OSError as exc:  # the target's interpreter or directory is gone
                start_error = job_process.start_error_message(exc, read_launch(folder))
            try:
                job_process.execute(job_id, get_catalog(), proc=proc, folder=folder,
                                    started=started, start_error=start_error)
            except Exception as exc:  # never leave a migration running unattended
                if proc is not None:
                    proc.kill()
                db.session.rollback()
                job_process.fail(job_id, f"The job thread failed ({type(exc).__name__}: "
                                         f"{exc}); the migration process was stopped.")

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for each job thread started so far."""
        for thread in list(self.threads):
            thread.join(timeout)


def choose(config: dict) -> Launcher:
    """The launcher for an app's ``config``: ``JOB_LAUNCHER`` when set, else
    Celery when ``BROKER_URL`` is set, else a local process.

    :raises ConfigurationError: an unknown ``JOB_LAUNCHER``, or ``"celery"``
        without ``BROKER_URL``.
    """
    broker = config.get("BROKER_URL")
    choice = config.get("JOB_LAUNCHER") or ("celery" if broker else "local")
    if choice not in CHOICES:
        raise ConfigurationError(f"JOB_LAUNCHER must be one of {', '.join(CHOICES)}, "
                                 f"not {choice!r}")
    if choice == "celery":
        if not broker:
            raise ConfigurationError("JOB_LAUNCHER celery needs DASHBOARD_BROKER_URL")
        return CeleryLauncher(broker)
    if choice == "inprocess":
        return InProcessLauncher()
    return LocalProcessLauncher(standbys=config.get("JOB_STANDBYS", 2))


def init_app(app: Flask) -> None:
    """Choose ``app``'s launcher (:func:`choose`) and keep it in
    ``app.extensions``.

    :raises ConfigurationError: see :func:`choose`.
    """
    app.extensions[EXTENSION] = choose(app.config)


def current() -> Launcher:
    """The current app's launcher (chosen by :func:`init_app`)."""
    return current_app.extensions[EXTENSION]
