"""Fleet rollouts: one command rolled out over many targets in waves.

:func:`create` stores a :class:`~webapp.models.Rollout` with one
:class:`~webapp.models.RolloutStep` per selected target (waves from
:func:`webapp.core.rollouts.waves`) and advances it; pause, resume and cancel
change its state. The steps are run by :mod:`.rollout_advance`, through
``submission.submit()`` like every other job. All of it lives in the dashboard
database, so any dashboard process or host may show or advance a rollout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import update

from ..core import rollouts as plan
from ..core.history import HistoryError
from ..core.permissions import Role
from ..core.plan import PlanError, validate_request
from ..extensions import db
from ..models import (
    REQUEST_PENDING,
    ROLLOUT_ACTIVE,
    JobStatus,
    Rollout,
    RolloutStatus,
    RolloutStep,
    StepStatus,
    User,
    utcnow,
)
from . import audit, events
from .accounts import role_on, visible_targets
from .authorization import authorize
from .catalog import Catalog
from .jobs import reap_abandoned
from .refusals import Reason, Refused, needs_role
from .rollout_advance import advance, record_ended

MAX_CONCURRENCY = 50
MAX_REASON = 2000


@dataclass(frozen=True)
class RolloutSpec:
    """What to roll out (already parsed): ``command`` and ``revision`` as for
    a job, the targets (``selection``), waves of at most ``batch_size`` per
    tier (None: one wave per tier), at most ``concurrency`` steps at once,
    whether the first failure stops it, a ``reason`` (shown to approvers of
    protected targets), and whether it starts ``paused``."""

    command: str
    revision: str
    selection: plan.Selection
    batch_size: int | None = None
    concurrency: int = 1
    stop_on_failure: bool = True
    reason: str = ""
    paused: bool = False


def create(catalog: Catalog, user: User, spec: RolloutSpec, actor: audit.Actor) -> Rollout:
    """Check and store a rollout, then start its first wave (unless ``paused``).

    Every selected target is checked first — the user's role there and its
    policy (:func:`webapp.services.authorization.authorize`), the command and revision
    against its history — so a rollout that could not run everywhere is
    refused whole and nothing is stored. Plans are computed later, when
    each step starts, from that target's state then.

    :raises Refused: role/policy (403), bad input or empty selection (400),
        unknown target or revision (404), unreadable script directory (409).
    """
    if not 1 <= spec.concurrency <= MAX_CONCURRENCY:
        raise Refused(Reason.BAD_INPUT, f"concurrency must be between 1 and {MAX_CONCURRENCY}")
    if len(spec.reason) > MAX_REASON:
        raise Refused(Reason.BAD_INPUT, f"reason is longer than {MAX_REASON} characters")
    # a named target the user may not see answers exactly like one that does
    # not exist, so a rollout cannot be used to learn which names exist
    visible = {t.name for t in visible_targets(user, catalog.targets.values())}
    unseen = [name for name in spec.selection.names if name not in visible]
    if unseen:
        raise Refused(Reason.NOT_FOUND, f"no target called {', '.join(unseen)[:200]}")
    try:
        targets = plan.select(catalog.targets.values(), spec.selection)
        waves = plan.waves(targets, spec.batch_size)
    except plan.SelectionError as exc:
        raise Refused(Reason.NOT_FOUND if exc.unknown else Reason.BAD_INPUT, str(exc))
    for target in targets:
        authorize(user, target, spec.command)
        try:
            history = catalog.history(target)
            validate_request(spec.command, spec.revision, set(history.by_id),
                             history.branch_labels)
        except HistoryError as exc:
            raise Refused(Reason.SCRIPT_DIRECTORY, f"{target.name}: the script directory "
                          f"cannot be read: {exc}")
        except PlanError as exc:
            raise Refused(Reason.BAD_INPUT, str(exc))
        except LookupError as exc:
            raise Refused(Reason.UNKNOWN_REVISION, f"{target.name}: {exc}")
    rollout = Rollout(command=spec.command, revision=spec.revision, user_id=user.id,
                      status=RolloutStatus.PAUSED if spec.paused else RolloutStatus.RUNNING,
                      concurrency=spec.concurrency, batch_size=spec.batch_size,
                      stop_on_failure=spec.stop_on_failure, reason=spec.reason.strip(),
                      selection=json.dumps(spec.selection.as_dict()))
    db.session.add(rollout)
    db.session.flush()
    for number, wave in enumerate(waves, start=1):
        for position, target in enumerate(wave):
            db.session.add(RolloutStep(rollout_id=rollout.id, wave=number, position=position,
                                       target=target.name, status=StepStatus.PENDING))
    audit.record(actor, "rollout.create", "ok", commit=False, rollout=rollout.id,
                 command=spec.command, revision=spec.revision,
                 selection=spec.selection.as_dict(), waves=[[t.name for t in w] for w in waves],
                 concurrency=spec.concurrency, stop_on_failure=spec.stop_on_failure,
                 paused=spec.paused)
    db.session.commit()
    advance(catalog, rollout.id)
    return get(catalog, rollout.id, advancing=False)


def get(catalog: Catalog, rollout_id: int, *, advancing: bool = True) -> Rollout | None:
    """The rollout, or None. Writes nothing itself and never starts a step
    (views are GETs, and a GET never starts a migration: :func:`proceed`
    does, on a POST). Unless ``advancing`` is False it sends
    :data:`webapp.services.events.state_read` first: the housekeeping's
    throttled fallback then marks jobs whose process is gone abandoned and
    records the ended steps."""
    if not 0 < rollout_id < 2**63:
        return None
    if advancing:
        events.state_read.send()
    return db.session.get(Rollout, rollout_id)


def _recorded(catalog: Catalog, rollout_id: int) -> Rollout | None:
    """The rollout after a POST changed it: abandoned jobs reaped and its
    ended steps recorded now (no step starts)."""
    reap_abandoned()
    record_ended(catalog, rollout_id)
    db.session.expire_all()
    return get(catalog, rollout_id, advancing=False)


def recent(limit: int = 50) -> list[Rollout]:
    """Newest rollouts first."""
    return list(db.session.execute(db.select(Rollout).order_by(Rollout.id.desc())
                                   .limit(limit)).scalars())


def visible_to(catalog: Catalog, user: User, rollout: Rollout) -> bool:
    """True when ``user`` may see every still-configured target of ``rollout``
    (viewer role there, :func:`webapp.services.accounts.role_on`)."""
    return all(role_on(user, catalog.get(s.target)) >= Role.VIEWER for s in rollout.steps
               if catalog.get(s.target) is not None)


def _controlled(catalog: Catalog, rollout_id: int, user: User) -> Rollout:
    """The rollout, if ``user`` may run jobs (operator) on every target of it
    that is still configured — the right to pause, resume or cancel it.

    :raises Refused: not_found, role.
    """
    rollout = db.session.get(Rollout, rollout_id) if 0 < rollout_id < 2**63 else None
    if rollout is None:
        raise Refused(Reason.NOT_FOUND, f"There is no rollout {rollout_id}.")
    if not user.has_role("operator") and not rollout.steps:
        raise needs_role(f"Controlling rollout {rollout_id}", "operator", user.role)
    for step in rollout.steps:
        target = catalog.get(step.target)
        if target is not None:
            authorize(user, target, "upgrade")  # the role only: a policy may have changed
    return rollout


def _change(rollout_id: int, old: tuple[str, ...], new: RolloutStatus, **values) -> bool:
    done = db.session.execute(update(Rollout).where(
        Rollout.id == rollout_id, Rollout.status.in_(old)).values(status=new, **values)
    ).rowcount
    db.session.commit()
    return bool(done)


def pause(catalog: Catalog, rollout_id: int, user: User, actor: audit.Actor) -> Rollout:
    """Start no further steps; steps in flight go on to their end.

    :raises Refused: role (operator), not_found, not_open (not running).
    """
    _controlled(catalog, rollout_id, user)
    if not _change(rollout_id, (RolloutStatus.RUNNING,), RolloutStatus.PAUSED):
        raise Refused(Reason.NOT_OPEN, f"Rollout {rollout_id} is not running.")
    audit.record(actor, "rollout.pause", "ok", rollout=rollout_id)
    return _recorded(catalog, rollout_id)


def resume(catalog: Catalog, rollout_id: int, user: User, actor: audit.Actor) -> Rollout:
    """Go on where a paused rollout stopped (starts the next steps now).

    :raises Refused: role (operator), not_found, not_open (not paused).
    """
    _controlled(catalog, rollout_id, user)
    if not _change(rollout_id, (RolloutStatus.PAUSED,), RolloutStatus.RUNNING):
        raise Refused(Reason.NOT_OPEN, f"Rollout {rollout_id} is not paused.")
    audit.record(actor, "rollout.resume", "ok", rollout=rollout_id)
    reap_abandoned()
    advance(catalog, rollout_id)  # a POST: the next steps start now
    return get(catalog, rollout_id, advancing=False)


def proceed(catalog: Catalog, rollout_id: int, user: User, actor: audit.Actor) -> Rollout:
    """Start the steps a running rollout is ready for now (POST "Start next
    steps"). Steps normally start when a job of the rollout ends; this is for
    a step that ended without its job process saying so (a job found
    abandoned, a request that expired).

    :raises Refused: role (operator), not_found, not_open (not running).
    """
    rollout = _controlled(catalog, rollout_id, user)
    if rollout.status != RolloutStatus.RUNNING:
        raise Refused(Reason.NOT_OPEN, f"Rollout {rollout_id} is {rollout.status}, "
                                       "not running.")
    audit.record(actor, "rollout.proceed", "ok", rollout=rollout_id)
    reap_abandoned()
    advance(catalog, rollout_id)
    return get(catalog, rollout_id, advancing=False)


def cancel(catalog: Catalog, rollout_id: int, user: User, actor: audit.Actor) -> Rollout:
    """End the rollout: pending steps never run, its open approval requests
    are withdrawn and jobs still waiting for a queue worker are cancelled;
    a migration already running is not interrupted (its end is still recorded).

    :raises Refused: role (operator), not_found, not_open (already ended).
    """
    from .approvals import withdraw
    from .jobs import cancel_queued

    rollout = _controlled(catalog, rollout_id, user)
    if not _change(rollout_id, ROLLOUT_ACTIVE, RolloutStatus.CANCELLED, finished_at=utcnow(),
                   note=f"cancelled by {user.username}"):
        raise Refused(Reason.NOT_OPEN, f"Rollout {rollout_id} has already ended.")
    db.session.execute(update(RolloutStep).where(
        RolloutStep.rollout_id == rollout_id, RolloutStep.status == StepStatus.PENDING).values(
        status=StepStatus.NOT_RUN, note=f"not started: rollout cancelled by {user.username}"))
    db.session.commit()
    for step in db.session.get(Rollout, rollout_id).steps:
        try:
            if step.request is not None and step.request.status in REQUEST_PENDING:
                withdraw(step.request.id, rollout.user or user, actor)
            elif step.job is not None and step.job.status == JobStatus.QUEUED \
                    and step.job.worker_pid is None:
                cancel_queued(step.job.id, user, actor)
        except Refused:
            pass  # it moved on meanwhile: its end is recorded like any other
    audit.record(actor, "rollout.cancel", "ok", rollout=rollout_id)
    return _recorded(catalog, rollout_id)


def counts(rollout: Rollout) -> dict[str, int]:
    """Number of steps in each state (every :class:`StepStatus`, zeros included)."""
    result = {str(s): 0 for s in StepStatus}
    for step in rollout.steps:
        result[step.status] += 1
    return result


def selection_of(rollout: Rollout) -> dict:
    """The stored selection ``{"tier": [...], "tag": [...], "targets": [...]}``."""
    return json.loads(rollout.selection or "{}")


# the controls of a rollout by name (a URL part), each ``(catalog, rollout_id, user, actor)``
CONTROLS = {"pause": pause, "resume": resume, "proceed": proceed, "cancel": cancel}
