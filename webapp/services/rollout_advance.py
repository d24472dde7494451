"""Advancing a fleet rollout: start the next steps, record the ended ones.

There is no scheduler: :func:`advance` runs when one of the rollout's jobs
reaches a final state (:func:`job_finished`, subscribed to
:data:`webapp.services.events.job_finished`, which the job's own process,
Celery worker or a cancel sends), when one of its approval requests is
rejected or withdrawn (:func:`request_ended`, subscribed to
:data:`webapp.services.events.request_ended`; an *expired* request only has
its step's end recorded, as a view would: expiry may happen during a GET),
and on the POSTs that start, resume or continue a rollout. The subscriptions
are made once per process by :func:`subscribe`, from ``create_app``.
A view of a rollout (a GET) only records what ended (:func:`record_ended`,
without the lease): a GET never starts a migration. It is idempotent and
safe to call from any number of processes and hosts at once:

- a *lease* on the rollout row (an atomic ``UPDATE ... WHERE lease_until <
  now``) lets one advancer at a time count the steps in flight and start new
  ones, so the concurrency limit holds across processes; an advancer that
  finds the lease taken sets ``dirty`` and the holder looks again before it
  lets go, so no finished job goes unnoticed. Only advancers that may start
  steps take the lease: a view holding it would swallow such a wake-up;
- every step changes state with a conditional ``UPDATE ... WHERE status =
  <old>``, so even two advancers that both believed they held the lease
  (one outlived its lease) never start the same step twice.

Each step's job is submitted through :func:`webapp.services.submission.submit`
(the one way), which computes that target's plan from its current state when
the step starts; on a protected target it becomes an approval request and the
step waits for it.
"""

from __future__ import annotations

import secrets
import sys
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_, update

from ..extensions import db
from ..models import (
    JOB_ACTIVE,
    STEP_IN_FLIGHT,
    ApprovalRequest,
    Job,
    JobStatus,
    RequestStatus,
    Rollout,
    RolloutStatus,
    RolloutStep,
    StepStatus,
    utcnow,
)
from . import audit, events, launchers
from .catalog import Catalog
from .refusals import Reason, Refused

LEASE = timedelta(minutes=5)  # longer than starting a few steps ever takes


def _max_passes(rollout_id: int) -> int:
    """A bound on the passes of one advance. A pass repeats only when it
    changed something, and steps only move forward (pending, starting,
    awaiting approval, running, ended): a few passes per step, plus the
    looks again that other advancers ask for, always suffice."""
    steps = db.session.execute(db.select(db.func.count()).select_from(RolloutStep).where(
        RolloutStep.rollout_id == rollout_id)).scalar() or 0
    return 4 * steps + 50


def advance(catalog: Catalog, rollout_id: int) -> None:
    """Bring rollout ``rollout_id`` up to date: record steps whose job or
    request ended, start pending steps of the current wave up to the
    concurrency limit, end the rollout when nothing is left. Returns at once
    (after flagging ``dirty``) when another advancer holds the lease. Only
    for a job's end, a decision or a POST: a view calls :func:`record_ended`.
    """
    token = secrets.token_hex(16)
    if not _acquire(rollout_id, token):
        _mark_dirty(rollout_id)
        if not _acquire(rollout_id, token):  # the holder will look again (dirty)
            return
    try:
        for _ in range(_max_passes(rollout_id)):
            db.session.expire_all()
            if not _advance_once(catalog, rollout_id, token) and _release(rollout_id, token):
                return
    finally:
        _release(rollout_id, token, force=True)


def record_ended(catalog: Catalog, rollout_id: int) -> None:
    """What a page or API view (a GET) may do: record ended steps and end
    the rollout when nothing is left, starting no step. It takes no lease:
    every change is conditional, and holding the lease would make a job's
    end, which may start steps, leave the next wave to this view."""
    for _ in range(_max_passes(rollout_id)):
        db.session.expire_all()
        if not _advance_once(catalog, rollout_id, None):
            return


def _acquire(rollout_id: int, token: str) -> bool:
    now = utcnow()
    got = db.session.execute(update(Rollout).where(
        Rollout.id == rollout_id,
        or_(Rollout.lease_until.is_(None), Rollout.lease_until < now)).values(
        lease_token=token, lease_until=now + LEASE, dirty=False)).rowcount
    db.session.commit()
    return bool(got)


def _mark_dirty(rollout_id: int) -> None:
    db.session.execute(update(Rollout).where(Rollout.id == rollout_id).values(dirty=True))
    db.session.commit()


def _release(rollout_id: int, token: str, *, force: bool = False) -> bool:
    """Let go of the lease unless someone flagged ``dirty`` meanwhile; then
    clear the flag, keep the lease and return False (look again). True when
    let go, or when the lease is no longer ours (stop). ``force``: let go."""
    clause = [Rollout.id == rollout_id, Rollout.lease_token == token]
    if not force:
        clause.append(Rollout.dirty.is_(False))
    done = db.session.execute(update(Rollout).where(*clause).values(
        lease_token=None, lease_until=None)).rowcount
    kept = 0
    if not done and not force:
        kept = db.session.execute(update(Rollout).where(
            Rollout.id == rollout_id, Rollout.lease_token == token).values(
            dirty=False, lease_until=utcnow() + LEASE)).rowcount
    db.session.commit()
    return not kept


def _move(step: RolloutStep, old: str, new: StepStatus, **values) -> bool:
    """Conditional state change of one step (committed); False when another
    advancer changed it first."""
    moved = db.session.execute(update(RolloutStep).where(
        RolloutStep.id == step.id, RolloutStep.status == old).values(
        status=new, **values)).rowcount
    db.session.commit()
    return bool(moved)


def _advance_once(catalog: Catalog, rollout_id: int, token: str | None) -> bool:
    """One pass; True when it changed something (another pass may follow).
    ``token``: the lease held (steps may start), or None (a view: none start)."""
    rollout = db.session.get(Rollout, rollout_id)
    if rollout is None:
        return False
    changed = _record_ended(rollout)  # also after a cancel: running jobs still end
    if not rollout.is_active:
        return changed
    steps = rollout.steps
    failed = [s for s in steps if s.status == StepStatus.FAILED]
    pending = [s for s in steps if s.status == StepStatus.PENDING]
    in_flight = [s for s in steps if s.status in STEP_IN_FLIGHT]
    if failed and rollout.stop_on_failure and pending:
        for step in pending:
            _move(step, StepStatus.PENDING, StepStatus.NOT_RUN,
                  note=f"not started: {failed[0].target} failed (stop on first failure)")
        return True
    if not pending and not in_flight:
        _finish(rollout, RolloutStatus.FAILED if failed else RolloutStatus.SUCCEEDED)
        return True
    if rollout.status == RolloutStatus.PAUSED or not pending or token is None:
        return changed
    wave = min(s.wave for s in pending + in_flight)
    busy = len(in_flight)
    for step in [s for s in pending if s.wave == wave]:
        if busy >= rollout.concurrency:
            break
        db.session.execute(update(Rollout).where(
            Rollout.id == rollout_id, Rollout.lease_token == token).values(
            lease_until=utcnow() + LEASE))
        ended = _start_step(catalog, rollout, step)
        changed = True
        if ended in STEP_IN_FLIGHT:
            busy += 1
        elif ended == StepStatus.FAILED and rollout.stop_on_failure:
            break
        # skipped (nothing to do) or failed to start: its slot is free again
    return changed


def _record_ended(rollout: Rollout) -> bool:
    """Steps whose job ended, or whose request was decided, change state."""
    changed = False
    if any(s.status == StepStatus.AWAITING_APPROVAL for s in rollout.steps):
        from .approvals import expire_requests

        expire_requests()
    stale = utcnow() - LEASE
    # what a cancel stopped before it ran did not fail: it did not run
    cancelled = StepStatus.NOT_RUN if rollout.status == RolloutStatus.CANCELLED else None
    for step in rollout.steps:
        if step.status == StepStatus.STARTING and step.started_at and step.started_at < stale:
            # its advancer stopped between claiming it and recording the job
            if _move(step, StepStatus.STARTING, StepStatus.FAILED, finished_at=utcnow(),
                     note="the process starting this step stopped before recording its "
                          "job: look at the target's recent jobs"):
                _audit_step(rollout, step, "failed", why="starter lost")
                changed = True
        if step.status == StepStatus.AWAITING_APPROVAL and step.request is not None:
            request = step.request
            if request.status == RequestStatus.EXECUTED and request.job_id:
                changed |= _move(step, StepStatus.AWAITING_APPROVAL, StepStatus.RUNNING,
                                 job_id=request.job_id)
                db.session.refresh(step)
            elif request.status in (RequestStatus.REJECTED, RequestStatus.WITHDRAWN,
                                    RequestStatus.EXPIRED):
                if _move(step, StepStatus.AWAITING_APPROVAL, cancelled or StepStatus.FAILED,
                         finished_at=utcnow(), note=f"request {request.id} {request.status}"):
                    _audit_step(rollout, step, "failed", request=request.id)
                    changed = True
        if step.status == StepStatus.RUNNING and step.job is not None \
                and step.job.status not in JOB_ACTIVE:
            job = step.job
            new = StepStatus.SUCCEEDED if job.status == JobStatus.SUCCEEDED \
                else (job.started_at is None and cancelled) or StepStatus.FAILED
            note = None if new == StepStatus.SUCCEEDED else \
                f"job {job.id} {job.status}" + (f": {job.error[:300]}" if job.error else "")
            if _move(step, StepStatus.RUNNING, new, finished_at=job.finished_at or utcnow(),
                     note=note):
                _audit_step(rollout, step, str(new), job_id=job.id)
                changed = True
    return changed


def _start_step(catalog: Catalog, rollout: Rollout, step: RolloutStep) -> StepStatus:
    """Claim a pending step and submit its job; returns the step's new state."""
    from .submission import JobRequest, submit

    if not _move(step, StepStatus.PENDING, StepStatus.STARTING, started_at=utcnow()):
        return StepStatus(db.session.get(RolloutStep, step.id).status)
    actor = audit.Actor(rollout.user.username if rollout.user else None,
                        f"rollout {rollout.id}")
    target = catalog.get(step.target)
    user = rollout.user
    try:
        if target is None:
            raise Refused(Reason.NOT_FOUND, f"target {step.target} is no longer configured")
        from .authorization import authorize_run_as

        # the step runs as the rollout's creator: still active and allowed now
        authorize_run_as(user, target, rollout.command, who=f"creator of rollout {rollout.id}")
        submitted = submit(catalog, user, JobRequest(target, rollout.command, rollout.revision),
                           actor, reason=f"rollout {rollout.id}: {rollout.reason}"[:2000],
                           fast_plan=True)
    except Refused as exc:
        new = StepStatus.SKIPPED if exc.reason == Reason.NOTHING_TO_DO else StepStatus.FAILED
        _move(step, StepStatus.STARTING, new, finished_at=utcnow(),
              note=f"{exc.reason}: {exc}"[:2000])
        _audit_step(rollout, step, str(new), reason=exc.reason, message=str(exc))
        return new
    except Exception as exc:  # a step never hangs in "starting"
        _move(step, StepStatus.STARTING, StepStatus.FAILED, finished_at=utcnow(),
              note=f"{type(exc).__name__}: {exc}"[:2000])
        _audit_step(rollout, step, "failed", error=type(exc).__name__)
        return StepStatus.FAILED
    if submitted.request is not None:
        _move(step, StepStatus.STARTING, StepStatus.AWAITING_APPROVAL,
              request_id=submitted.request.id)
        _audit_step(rollout, step, "awaiting", request=submitted.request.id, action="start")
        return StepStatus.AWAITING_APPROVAL
    _move(step, StepStatus.STARTING, StepStatus.RUNNING, job_id=submitted.job.id)
    _audit_step(rollout, step, "ok", job_id=submitted.job.id, action="start")
    return StepStatus.RUNNING


def _audit_step(rollout: Rollout, step: RolloutStep, outcome: str, *, action: str = "end",
                job_id: int | None = None, **details) -> None:
    audit.record(audit.Actor(rollout.user.username if rollout.user else None,
                             f"rollout {rollout.id}"),
                 f"rollout.step.{action}", outcome, target=step.target, job_id=job_id,
                 rollout=rollout.id, wave=step.wave, **details)


def _finish(rollout: Rollout, status: RolloutStatus) -> None:
    done = db.session.execute(update(Rollout).where(
        Rollout.id == rollout.id, Rollout.status.in_((RolloutStatus.RUNNING,
                                                      RolloutStatus.PAUSED))).values(
        status=status, finished_at=utcnow())).rowcount
    if done:
        counts: dict[str, int] = {}
        for step in rollout.steps:
            counts[step.status] = counts.get(step.status, 0) + 1
        audit.record(audit.SYSTEM, "rollout.end", str(status), rollout=rollout.id,
                     steps=counts, commit=False)
    db.session.commit()


def request_ended(request_id: int, catalog: Catalog, *, may_start: bool = True) -> None:
    """Hook for a rejected or withdrawn approval request (a POST): when it was a
    rollout step's, record that step's end and start what comes next. Never
    raises: the decision itself is already recorded.

    :param may_start: False for an expired request (expiry may run during a
        GET, which never starts a migration): the step's end is recorded
        (:func:`record_ended`) and nothing starts.
    """
    try:
        step = db.session.execute(db.select(RolloutStep).where(
            RolloutStep.request_id == request_id)).scalars().first()
        if step is not None and may_start:
            advance(catalog, step.rollout_id)
        elif step is not None:
            record_ended(catalog, step.rollout_id)
    except Exception as exc:  # the rollout page's "Start next steps" does it too
        db.session.rollback()
        print(f"advancing the rollout of request {request_id} failed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)


def step_for_job(job_id: int) -> RolloutStep | None:
    """The rollout step carried out by job ``job_id`` (directly, or through
    the approval request that started it), or None."""
    step = db.session.execute(db.select(RolloutStep).where(
        RolloutStep.job_id == job_id)).scalars().first()
    if step is None:
        step = db.session.execute(db.select(RolloutStep).join(
            ApprovalRequest, RolloutStep.request_id == ApprovalRequest.id).where(
            ApprovalRequest.job_id == job_id)).scalars().first()
    return step


def job_finished(job: Job, catalog: Catalog) -> None:
    """Hook for the process that recorded ``job``'s final state: advance its
    rollout, if it belongs to one — here, or (jobs run on Celery: the app's
    launcher is a :class:`~webapp.services.launchers.CeleryLauncher`) as a task on
    the rollout queue (``DASHBOARD_ROLLOUT_QUEUE``), whose worker reaches the
    targets' databases like the web host does. Never raises: the job's own
    outcome is already recorded."""
    try:
        step = step_for_job(job.id)
        if step is None:
            return
        launcher = launchers.current()
        if isinstance(launcher, launchers.CeleryLauncher):
            launcher.send_advance(step.rollout_id, current_app.config.get("ROLLOUT_QUEUE"))
        else:
            advance(catalog, step.rollout_id)
    except Exception as exc:  # the rollout page's "Start next steps" does it too
        db.session.rollback()
        print(f"advancing the rollout of job {job.id} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)


def _on_job_finished(job: Job, *, catalog: Catalog, **_extra) -> None:
    """Receiver of :data:`webapp.services.events.job_finished`."""
    job_finished(job, catalog)


def _on_request_ended(request: ApprovalRequest, *, catalog: Catalog, **_extra) -> None:
    """Receiver of :data:`webapp.services.events.request_ended`."""
    request_ended(request.id, catalog,
                  may_start=request.status != RequestStatus.EXPIRED)


def subscribe() -> None:
    """Connect this module's receivers to the job and request events (called
    once by ``create_app``; calling it again connects nothing twice: blinker
    keeps one connection per receiver, so a handler never runs twice)."""
    events.job_finished.connect(_on_job_finished, weak=False)
    events.request_ended.connect(_on_request_ended, weak=False)
