"""Housekeeping: the writes no GET handler makes itself.

:func:`run_housekeeping` marks jobs whose process is gone as abandoned
(:mod:`webapp.services.liveness`), expires approval requests whose time is
up and records the ended steps of rollouts (without starting any). Run it
from cron or a systemd timer with ``flask --app wsgi housekeeping``.

As a fallback (no timer installed, and for the job page that must show an
abandoned job within seconds), the read functions send
:data:`webapp.services.events.state_read`, and :func:`fallback` runs the
housekeeping at most once per :data:`FALLBACK_INTERVAL` seconds per app (one
app per process in production), never in two threads at once, and never
failing the read.
"""

from __future__ import annotations

import sys
import threading
import time

from flask import Flask, current_app

from ..extensions import db
from ..models import ROLLOUT_ACTIVE, STEP_IN_FLIGHT, Rollout, RolloutStep
from . import approvals, events, liveness, rollout_advance
from .catalog import Catalog, get_catalog

FALLBACK_INTERVAL = 2.0  # seconds
EXTENSION = "alembic_dashboard.housekeeping"


def run_housekeeping(catalog: Catalog | None = None) -> dict:
    """Reap abandoned jobs, expire requests, record ended rollout steps.

    :param catalog: the targets (default: the current app's); a target's
        database is asked whether a job's migration lock is still held.
    :return: ``{"abandoned": [job ids], "expired": [request ids],
        "rollouts": [ids of rollouts whose ended steps were recorded]}``.
    :raises sqlalchemy.exc.SQLAlchemyError: the dashboard database failed.
    """
    catalog = catalog if catalog is not None else get_catalog()
    abandoned = liveness.reap_abandoned(catalog)
    expired = approvals.expire_requests()
    open_rollouts = set(db.session.execute(db.select(Rollout.id).where(
        Rollout.status.in_(ROLLOUT_ACTIVE))).scalars())
    open_rollouts |= set(db.session.execute(db.select(RolloutStep.rollout_id).where(
        RolloutStep.status.in_(STEP_IN_FLIGHT))).scalars())
    for rollout_id in sorted(open_rollouts):
        rollout_advance.record_ended(catalog, rollout_id)  # starts no step
    db.session.expire_all()
    return {"abandoned": abandoned, "expired": expired, "rollouts": sorted(open_rollouts)}


class _Throttle:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = float("-inf")


def fallback(sender: object = None, **_extra) -> None:
    """Receiver of :data:`webapp.services.events.state_read`: run
    :func:`run_housekeeping` unless it ran for this app less than
    :data:`FALLBACK_INTERVAL` seconds ago or runs in another thread now.
    Never raises (a failure is printed to stderr and the read goes on)."""
    throttle: _Throttle | None = current_app.extensions.get(EXTENSION)
    if throttle is None or not throttle.lock.acquire(blocking=False):
        return
    try:
        if time.monotonic() - throttle.last < FALLBACK_INTERVAL:
            return
        throttle.last = time.monotonic()
        run_housekeeping()
    except Exception as exc:  # the read itself must still answer
        db.session.rollback()
        print(f"housekeeping failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        throttle.lock.release()


def init_app(app: Flask) -> None:
    """Give ``app`` its fallback throttle and subscribe :func:`fallback`
    (idempotent: one connection per process)."""
    app.extensions[EXTENSION] = _Throttle()
    events.state_read.connect(fallback, weak=False)
