"""Jobs on a real queue: Celery workers beside each database (optional).

With ``DASHBOARD_BROKER_URL=redis://host:6379/0`` the dashboard sends each job
to Celery instead of starting a local process; a target's ``queue`` (targets
file) names the queue its jobs go to, so only a worker started next to that
database runs them::

    DASHBOARD_BROKER_URL=redis://127.0.0.1:6379/0 DASHBOARD_DATABASE_URL=... \\
        celery -A webapp.tasks worker -Q shop-eu --concurrency 1

The worker needs the same dashboard database and targets file as the web
app, and the environment variables holding its targets' database URLs.
A migration is not idempotent, so a job is never retried: the message is
acknowledged when a worker takes it, and a worker lost mid-run leaves the
job to the liveness rules (its migration lock is freed with it), which mark
it abandoned — it is not run again. Targets without ``queue`` use
:data:`webapp.services.queue.DEFAULT_QUEUE`.
"""

from __future__ import annotations

import functools
import os

from .services.queue import ADVANCE_TASK_NAME, TASK_NAME, make_celery

# ``celery -A webapp.tasks worker`` finds this app. This module is the
# consumer, an entry point: nothing imports it (producers send tasks by name
# through :mod:`webapp.services.queue`).
app = make_celery(os.environ.get("DASHBOARD_BROKER_URL"))


@functools.cache
def _flask_app():
    """The dashboard app of this worker process (created once, after the fork)."""
    from . import create_app

    return create_app()


@app.task(name=TASK_NAME, ignore_result=True, max_retries=0)
def run_job(job_id: int) -> None:
    """Run queued job ``job_id`` in this worker process (see
    :func:`webapp.services.job_process.run_queued`)."""
    from .services import job_process
    from .services.catalog import get_catalog

    with _flask_app().app_context():
        job_process.run_queued(job_id, get_catalog())


@app.task(name=ADVANCE_TASK_NAME, ignore_result=True, max_retries=0)
def advance_rollout(rollout_id: int) -> None:
    """Advance rollout ``rollout_id`` (idempotent; see
    :func:`webapp.services.rollout_advance.advance`): this worker plans and
    submits the next steps, so it must reach their databases like the web host."""
    from .services import rollout_advance
    from .services.catalog import get_catalog

    with _flask_app().app_context():
        rollout_advance.advance(get_catalog(), rollout_id)
