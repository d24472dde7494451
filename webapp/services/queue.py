"""The job queue's producer side: Celery tasks sent **by name**.

The web process (and a job process that records a job's end) sends tasks by
their names only; the consumer, :mod:`webapp.tasks` (``celery -A webapp.tasks
worker``), is an entry point that nothing imports. Both use the same names and
settings from here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

DEFAULT_QUEUE = "alembic-dashboard"
TASK_NAME = "alembic_dashboard.run_job"
ADVANCE_TASK_NAME = "alembic_dashboard.advance_rollout"

SETTINGS = dict(
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
    """A Celery app for ``broker_url`` with the dashboard's settings (Celery is
    imported here: a process without a broker never loads it)."""
    from celery import Celery

    celery = Celery("alembic_dashboard", broker=broker_url)
    celery.conf.update(SETTINGS)
    return celery


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
