"""The job process: ``python webapp/worker.py JOB_ID FOLDER``.

Started by :func:`webapp.services.jobs.launch_worker` in its own session, so
it survives the web request, the browser closing and gunicorn restarting its
workers. It first starts the migration prepared in FOLDER (standard library
only, before the app is imported, so the two start-ups overlap), then starts
the job's heartbeat (SQLAlchemy Core only), then creates the app from the
same environment variables as the web app and follows the migration to its
end (:func:`webapp.services.job_process.execute`).

Run by path, not with ``-m``: ``-m webapp.worker`` would import the whole
package (Flask, SQLAlchemy) before the migration could start.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The agent package is standard library only at import time: the one way to
# start a prepared run, shared with webapp.core.runner, without importing webapp.
sys.path.insert(0, str(PROJECT_ROOT / "webapp" / "agent"))
from alembic_dashboard_agent.launch import spawn_prepared_run  # noqa: E402

HEARTBEAT_INTERVAL = 2.0  # seconds


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


def main(argv: list[str]) -> int:
    """Run job ``argv[1]`` prepared in folder ``argv[2]``; exit 0 whatever the outcome."""
    if len(argv) != 3 or not argv[1].isdigit():
        print("usage: python webapp/worker.py JOB_ID FOLDER", file=sys.stderr)
        return 2
    started = time.time()
    folder = Path(argv[2])
    proc = spawn_prepared_run(folder)
    # The migration has the CPU first; following it (importing Flask and
    # SQLAlchemy, flushing the log) can wait. Matters on small machines.
    os.nice(5)
    heartbeat = start_heartbeat(int(argv[1]))
    try:
        sys.path.insert(0, str(PROJECT_ROOT))
        from webapp import create_app
        from webapp.services import job_process
        from webapp.services.catalog import get_catalog

        app = create_app()
        with app.app_context():
            job_process.execute(int(argv[1]), get_catalog(), proc=proc, folder=folder,
                                started=started)
    except BaseException:
        proc.kill()  # never leave a migration running that nobody follows
        raise
    finally:
        heartbeat.set()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
