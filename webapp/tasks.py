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
:data:`DEFAULT_QUEUE`.
"""

from __future__ import annotations

import functools
import os
import threading

from celery import Celery

DEFAULT_QUEUE = "alembic-dashboard"
TASK_NAME = "alembic_dashboard.run_job"
ADVANCE_TASK_NAME = "alembic_dashboard.advance_rollout"

_SETTINGS = dict(
    task_acks_late=False,             # acknowledged on receipt: never redelivered
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,     # a worker holds one job at a time
    task_default_queue=DEFAULT_QUEUE,
    task_ignore_result=True,          # outcomes live in the dashboard database
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json", accept_content=["json"],
)


def make_celery(broker_url: str | None) -> Celery:
    """A Celery app for ``broker_url`` with the dashboard's settings."""
    celery = Celery("alembic_dashboard", broker=broker_url)
    celery.conf.update(_SETTINGS)
    return celery


# ``celery -A webapp.tasks worker`` finds this app
app = make_celery(os.environ.get("DASHBOARD_BROKER_URL"))
_producers: dict[str, Celery] = {}
_producers_lock = threading.Lock()


def _producer(broker_url: str) -> Celery:
    """One Celery app per broker URL in this process, to send tasks with."""
    with _producers_lock:
        producer = _producers.get(broker_url)
        if producer is None:
            producer = _producers[broker_url] = make_celery(broker_url)
    return producer


def send_job(broker_url: str, job_id: int, queue: str | None) -> None:
    """Queue job ``job_id`` on ``queue`` (default :data:`DEFAULT_QUEUE`) at
    ``broker_url``, from the web process.

    :raises kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    _producer(broker_url).send_task(TASK_NAME, args=[job_id], queue=queue or DEFAULT_QUEUE)


def send_advance(broker_url: str, rollout_id: int, queue: str | None) -> None:
    """Queue "advance rollout ``rollout_id``" on ``queue`` (the rollout queue,
    default :data:`DEFAULT_QUEUE`), from the process that recorded a job's end.

    :raises kombu.exceptions.OperationalError: the broker cannot be reached.
    """
    _producer(broker_url).send_task(ADVANCE_TASK_NAME, args=[rollout_id],
                                    queue=queue or DEFAULT_QUEUE)


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
