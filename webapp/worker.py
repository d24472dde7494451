"""The job process: ``python webapp/worker.py JOB_ID FOLDER``.

Started by :class:`webapp.services.launchers.LocalProcessLauncher` in its own session, so
it survives the web request, the browser closing and gunicorn restarting its
workers. It first starts the migration prepared in FOLDER (standard library
only, before the app is imported, so the two start-ups overlap; when that
process cannot be started the job ends *failed* saying why), then starts
the job's heartbeat (SQLAlchemy Core only), then creates the app from the
same environment variables as the web app and follows the migration to its
end (:func:`webapp.services.job_process.execute`).

``python webapp/worker.py --standby FOLDER`` is the same process started
before its job (:class:`webapp.services.launchers.LocalProcessLauncher`
keeps one or two per web process): it starts a standby agent for the run
predicted in FOLDER's ``launch.json`` (the target's interpreter, past its
start-up and Alembic's imports), creates the app, then waits for one line
``JOB_ID FOLDER`` on stdin and runs that job like the cold form; its
migration starts at once when the job's launch matches the prediction (else
a fresh agent is started). Stdin closed, or nothing within
:data:`STANDBY_IDLE_SECONDS`: it exits without doing anything.

Run by path, not with ``-m``: ``-m webapp.worker`` would import the whole
package (Flask, SQLAlchemy) before the migration could start.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The agent package is standard library only at import time: the one way to
# start a prepared run, shared with webapp.core.runner, without importing webapp.
sys.path.insert(0, str(PROJECT_ROOT / "webapp" / "agent"))
from alembic_dashboard_agent.launch import (  # noqa: E402
    Standby,
    read_launch,
    spawn_prepared_run,
)

HEARTBEAT_INTERVAL = 2.0  # seconds
# a standby left unused this long exits (the launcher stops handing it jobs a
# minute before: webapp.services.launchers.STANDBY_USE_SECONDS)
STANDBY_IDLE_SECONDS = 600.0


def start_heartbeat(job_id: int) -> threading.Event:
    """Beat for ``job_id`` from this process's first second until the
    returned event is set: ``jobs.heartbeat_at`` is renewed while the job is
    queued or running, with SQLAlchemy Core only (no Flask, no app), so a
    slow start-up of the rest never looks like a dead job."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    engine = sa.create_engine(os.environ["DASHBOARD_DATABASE_URL"], poolclass=NullPool)
    jobs = sa.table("jobs", sa.column("id"), sa.column("status"),
                    sa.column("heartbeat_at", sa.DateTime()))
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                with engine.begin() as conn:
                    conn.execute(sa.update(jobs).where(
                        jobs.c.id == job_id, jobs.c.status.in_(("queued", "running"))
                    ).values(heartbeat_at=datetime.now(UTC).replace(tzinfo=None)))
            except Exception as exc:  # the dashboard database blinked: try again
                print(f"heartbeat of job {job_id} failed: {exc}", file=sys.stderr)
            if stop.wait(HEARTBEAT_INTERVAL):
                break
        engine.dispose()

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return stop


def _safe_error(error: BaseException, folder: Path) -> str:
    """``"<Type>: <message>"`` without any database URL or password (the
    dashboard's own and the target's, from the run request) nor the
    dashboard's ``DASHBOARD_*`` secrets, or only the type
    when the scrubber itself cannot be imported."""
    text = f"{type(error).__name__}: {error}"
    urls = [os.environ.get("DASHBOARD_DATABASE_URL")]
    try:
        urls.append(json.loads((folder / "request.json").read_text(encoding="utf-8"))["url"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        from webapp.core.targets import configured_secrets, scrub_secrets
    except Exception:
        return type(error).__name__
    # the app (which registers every secret) may be what failed: the
    # dashboard's own secrets from this process's environment too
    extra = configured_secrets({}, os.environ, [])
    for url in urls:
        text = scrub_secrets(text, url, extra_secrets=extra)
    return text


def record_crash(job_id: int, error: BaseException, folder: Path,
                 start_error: str | None = None) -> None:
    """Mark ``job_id`` failed because this process itself failed (the app could
    not be created, the dashboard database refused a write, ...): the
    migration was stopped, and the job says so instead of being found
    *abandoned* with an empty log later (the traceback goes to the
    instance's ``jobs.log``). A job already finished is left alone.
    SQLAlchemy Core only: the app may be what failed.

    :param start_error: why the migration's process could not start at all
        (``job_process.start_error_message``); it is then the job's error,
        and ``error`` (what failed next) only goes to the log.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    text = _safe_error(error, folder)[:2000]
    message = (f"The job process failed ({text}); the migration process was stopped. "
               "Check the database's current revision on the target page before "
               "planning again.")
    if start_error is not None:  # nothing ran: say what could not start
        message = start_error
        text = f"{start_error}\n[dashboard] then the job process failed too: {text}"
    else:
        text = message
    jobs = sa.table("jobs", sa.column("id"), sa.column("status"), sa.column("error"),
                    sa.column("log", sa.Text()), sa.column("finished_at", sa.DateTime()))
    guards = sa.table("target_guards", sa.column("job_id"))
    engine = sa.create_engine(os.environ["DASHBOARD_DATABASE_URL"], poolclass=NullPool)
    try:
        with engine.begin() as conn:
            done = conn.execute(sa.update(jobs).where(
                jobs.c.id == job_id, jobs.c.status.in_(("queued", "running"))).values(
                status="failed", error=message,
                log=sa.func.coalesce(jobs.c.log, "") + f"\n[dashboard] {text}\n",
                finished_at=datetime.now(UTC).replace(tzinfo=None))).rowcount
            if done:
                conn.execute(sa.delete(guards).where(guards.c.job_id == job_id))
    finally:
        engine.dispose()


def _start_error_message(error: OSError, folder: Path) -> str:
    """``job_process.start_error_message`` for the run prepared in ``folder``,
    without importing the app (its targets file check may be what fails now:
    it refuses an interpreter that is gone)."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from webapp.services.job_process import start_error_message

    return start_error_message(error, read_launch(folder))


def _lower_priority() -> None:
    """The migration has the CPU first; following it (importing Flask and
    SQLAlchemy, flushing the log) can wait. Matters on small machines.
    Relative to the web process's niceness: a job started by a finishing job
    (fleet rollouts) inherits +5 and must not add another 5 per generation."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    base = int(os.environ.get("DASHBOARD_JOB_BASE_NICENESS", current))
    if current < base + 5:
        os.nice(base + 5 - current)


def _create_app():
    sys.path.insert(0, str(PROJECT_ROOT))
    from webapp import create_app

    # a job process lives for one job: warm agents for later reads would be wasted
    return create_app({"AGENT_STANDBYS": 0})


def _follow(job_id: int, folder: Path, proc, start_error: OSError | None, started: float,
            app=None) -> None:
    """Beat for ``job_id`` and follow its migration ``proc`` to its end
    (:func:`webapp.services.job_process.execute`) in ``app`` (created here
    when None); on any failure of this process the migration is stopped and
    the job recorded *failed* (:func:`record_crash`)."""
    heartbeat = start_heartbeat(job_id)
    message = None
    try:
        if start_error is not None:
            message = _start_error_message(start_error, folder)
        app = app if app is not None else _create_app()
        from webapp.services import job_process
        from webapp.services.catalog import get_catalog

        with app.app_context():
            job_process.execute(job_id, get_catalog(), proc=proc, folder=folder,
                                started=started, start_error=message)
    except BaseException as exc:
        if proc is not None:
            proc.kill()  # never leave a migration running that nobody follows
        try:
            record_crash(job_id, exc, folder, message)
        except Exception as again:  # the dashboard database itself is gone
            print(f"could not record the failure of job {job_id}: {again}", file=sys.stderr)
        raise
    finally:
        heartbeat.set()


def standby(predicted_folder: Path) -> int:
    """The ``--standby`` form (module docstring); exit 0 whatever the outcome."""
    predicted = read_launch(predicted_folder)
    shutil.rmtree(predicted_folder, ignore_errors=True)  # it holds the target's environment
    agents = Standby()
    try:
        agents.prepare(predicted)  # before lowering our priority: the agent keeps the base one
    except OSError:
        pass  # the interpreter is gone: the job, if one comes, fails saying so
    _lower_priority()
    app = _create_app()
    ready, _, _ = select.select([sys.stdin], [], [], STANDBY_IDLE_SECONDS)
    line = sys.stdin.readline() if ready else ""
    if not line.strip():
        agents.close()
        return 0
    job, folder = line.split(maxsplit=1)
    folder_path, started = Path(folder.strip()), time.time()
    proc, start_error = None, None
    try:
        proc = agents.spawn(read_launch(folder_path))
    except OSError as exc:
        start_error = exc
    _follow(int(job), folder_path, proc, start_error, started, app)
    return 0


def main(argv: list[str]) -> int:
    """Run job ``argv[1]`` prepared in folder ``argv[2]`` (or wait for one:
    ``--standby FOLDER``); exit 0 whatever the outcome."""
    if len(argv) == 3 and argv[1] == "--standby":
        return standby(Path(argv[2]))
    if len(argv) != 3 or not argv[1].isdigit():
        print("usage: python webapp/worker.py JOB_ID FOLDER | --standby FOLDER",
              file=sys.stderr)
        return 2
    started = time.time()
    folder = Path(argv[2])
    proc, start_error = None, None
    try:
        proc = spawn_prepared_run(folder)
    except OSError as exc:
        # the target's interpreter (or working directory) is gone, e.g. removed
        # after the dashboard checked it at start: the job must fail saying so,
        # not die here and be found *abandoned* with an empty log
        start_error = exc
    _lower_priority()
    _follow(int(argv[1]), folder, proc, start_error, started)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
