"""Jobs: authorise, plan, guard and launch Alembic commands on targets.

:func:`webapp.services.submission.submit` is the one way a migration is asked
for (above this module and :mod:`webapp.services.approvals`); it uses
:func:`authorize`, :func:`plan_job` and :func:`start_job` from here.

A job is a :class:`~webapp.models.Job` row plus a
:class:`~webapp.models.TargetGuard` row (one per target, enforced by its
primary key in the shared dashboard database). It runs where the app's
launcher puts it (:mod:`webapp.services.launchers`: its own process
``webapp/worker.py JOB_ID FOLDER`` detached from the web worker, or a Celery
worker; see :mod:`webapp.services.job_process`), which holds the lock on the target
database itself through the agent. :mod:`webapp.services.liveness` decides,
from facts, when a job's process is gone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ..core.history import HistoryError
from ..core.permissions import Role
from ..core.plan import Plan, PlanError, compute_plan, is_transactional_ddl, validate_request
from ..core.runner import TargetProcessError
from ..core.status import DatabaseUnavailable, current_heads, unknown_revision_message
from ..core.targets import Target, TargetUrlMissing
from ..extensions import db
from ..models import Job, JobStatus, TargetGuard, User, utcnow
from . import accounts, audit, events, invalid_indexes, launchers, liveness
from .catalog import Catalog
from .launchers import drop_unstarted
from .refusals import Reason, Refused, approvals_text, needs_role

_UNREACHABLE_ERRORS = ("OperationalError", "InterfaceError", "TimeoutError")


@dataclass
class JobRequest:
    """A user's request: which target, command and revision (already parsed).

    ``drop_invalid_indexes``: the plan first drops the target's INVALID
    indexes (:mod:`webapp.core.invalid_indexes`). ``resume_of``: the id of a
    failed job whose half-applied revision this job resumes from its
    statement journal; ``compensate_of``: one whose statements that took
    effect this job undoes (command ``compensate``, revision the half-applied
    one); see :mod:`webapp.services.recovery`. Both None for a plain job.
    """

    target: Target
    command: str
    revision: str
    drop_invalid_indexes: bool = False
    resume_of: int | None = None
    compensate_of: int | None = None


def _unreachable(exc: Exception) -> Refused:
    """A refusal for a database (or its URL, or the app that knows it) out of reach."""
    detail = f"{exc.error_class}: {exc}" if isinstance(exc, DatabaseUnavailable) else str(exc)
    return Refused(Reason.UNREACHABLE, f"The database cannot be reached: {detail}")


def plan_job(catalog: Catalog, request: JobRequest) -> Plan:
    """Validate the revision against the target's history and compute the plan.

    :raises Refused: bad input, unknown revision, unreadable script
        directory, Alembic refusing the command (plan_error), env.py or a
        revision failing while planning (plan_failed), missing SQLite file,
        unreachable database.
    """
    target = request.target
    try:
        history = catalog.history(target)
    except HistoryError as exc:
        raise Refused(Reason.SCRIPT_DIRECTORY, f"The script directory cannot be read: {exc}")
    try:
        validate_request(request.command, request.revision, set(history.by_id),
                         history.branch_labels)
    except PlanError as exc:
        raise Refused(Reason.BAD_INPUT, str(exc))
    except LookupError as exc:
        raise Refused(Reason.UNKNOWN_REVISION, str(exc))
    try:
        url = catalog.read_url(target)  # a read path: the read-only account when named
        current = _current_heads(catalog, target, url)
        unknown = [r for r in current if r not in history.by_id]
        if unknown:  # Alembic would stop at "Can't locate revision": say where it is
            raise Refused(Reason.PLAN_ERROR, "Nothing can be planned: "
                          f"{unknown_revision_message(unknown, history)}.")
        if request.command == "downgrade":
            _refuse_missing_downgrade(history, current, request.revision)
        # A plan depends only on the revision files and the database's current
        # revisions: the confirm step reuses the plan it showed unless either moved.
        key = ("plan", target.name, request.command, request.revision, current,
               history.fingerprint, hashlib.sha256(url.encode()).hexdigest())
        plan = catalog.plans.get_or_compute(key, lambda: compute_plan(
            target, request.command, request.revision, url=url, heads=history.heads))
        # live state, not cached: INVALID indexes come and go without a revision moving
        return invalid_indexes.attach(catalog, target, plan, request.drop_invalid_indexes)
    except (DatabaseUnavailable, TargetUrlMissing) as exc:
        raise _unreachable(exc)
    except PlanError as exc:
        raise Refused(Reason.PLAN_ERROR, f"Alembic cannot plan this: {exc}")
    except TargetProcessError as exc:
        if exc.error_type in _UNREACHABLE_ERRORS and exc.phase != "rehearsal":
            raise Refused(Reason.UNREACHABLE, f"The database cannot be reached: "
                          f"{exc.error_type}: {exc}")
        where = ("in the rehearsal on a scratch copy of the database"
                 if exc.phase == "rehearsal" else "in offline mode")
        raise Refused(Reason.PLAN_FAILED, "The plan could not be computed (env.py or a "
                      f"revision failed {where}): {exc.error_type}: {exc}")


def _refuse_missing_downgrade(history, current: tuple[str, ...], revision: str) -> None:
    """Refuse, before any process starts, a downgrade that would reach a
    revision file without ``downgrade()`` (Alembic would stop there with
    ``AttributeError: module ... has no attribute 'downgrade'``).

    :raises Refused: :attr:`Reason.UNSUPPORTED` naming those revisions.
    """
    blockers = history.downgrade_blockers(current, revision)
    if blockers:
        names = ", ".join(f"{b.revision} ({b.path.name})" for b in blockers)
        raise Refused(Reason.UNSUPPORTED, f"Cannot downgrade to {revision}: this downgrade "
                      f"would run revision(s) with no downgrade() function: {names}. "
                      "Only downgrades that stop above them can run.")


def quick_upgrade_plan(catalog: Catalog, request: JobRequest) -> Plan | None:
    """A plan of steps only, computed in this process from the history's
    RevisionMap, for API upgrades to ``head``, ``heads``, ``<label>@head`` or a
    revision id.

    Pipelines do not review SQL before they run, so the API skips rendering
    the offline SQL of every pending revision in the target's process (the
    largest part of a POST's time). The steps, the current revisions and the
    files' checksums are still pinned, and the job process refuses to run if
    the database moved. Returns None when the full plan is needed (other
    commands, relative revisions, multiple heads for ``head``, unknown ids).

    :raises Refused: unreachable or missing database.
    """
    from ..core.plan import PlanStep
    from .checks import file_sha256

    target = request.target
    if request.command != "upgrade" or request.revision in ("+1", "-1", "base"):
        return None
    try:
        history = catalog.history(target)
        url = catalog.database_url(target)
        current = _current_heads(catalog, target, url)
    except HistoryError:
        return None
    except (DatabaseUnavailable, TargetUrlMissing, TargetProcessError) as exc:
        raise _unreachable(exc)
    if request.revision not in ("head", "heads") and request.revision not in history.by_id \
            and request.revision not in {label + "@head" for label in history.branch_labels}:
        return None
    if any(r not in history.by_id for r in current):
        return None
    try:
        revisions = list(history.revision_map.iterate_revisions(
            request.revision, current, implicit_base=True))
    except Exception:  # MultipleHeads, not an ancestor...: the full plan explains it
        return None
    steps = []
    for rev in reversed(revisions):
        info = history.by_id[rev.revision]
        steps.append(PlanStep(revision=info.revision, direction="upgrade",
                              down_revisions=list(info.down_revisions), message=info.message,
                              path=str(info.path), sha256=file_sha256(str(info.path))))
    return invalid_indexes.attach(catalog, target, Plan(
        target=target.name, command="upgrade", revision=request.revision,
        current_before=list(current), current_after=[], steps=steps,
        sql="-- offline SQL not rendered for API jobs (GET /targets/<name>/pending.sql)",
        dialect=make_url(url).get_backend_name()), request.drop_invalid_indexes)


def _current_heads(catalog: Catalog, target: Target, url: str) -> tuple[str, ...]:
    """Current heads, sorted.

    :raises Refused: :attr:`Reason.DATABASE_MISSING` for a SQLite file that
        does not exist — running there would create an empty database beside
        a typo, so nothing is planned or run.
    :raises DatabaseUnavailable: the database cannot be read.
    """
    try:
        return tuple(sorted(current_heads(catalog.engines.get(url), target.version_table)))
    except DatabaseUnavailable as exc:
        if exc.error_class == "FileNotFoundError":
            raise Refused(Reason.DATABASE_MISSING, f"{exc}. Create it first (an empty file "
                          "is an empty SQLite database) or correct the URL in "
                          f"${target.url_env or 'the targets file'}.") from None
        raise


def running_job(target_name: str) -> Job | None:
    """The job currently holding ``target_name``'s guard, if any."""
    guard = db.session.get(TargetGuard, target_name)
    return db.session.get(Job, guard.job_id) if guard is not None else None


def reap_abandoned() -> list[int]:
    """Mark jobs whose process is gone as abandoned (see :mod:`.liveness`),
    now: for POSTs (a GET leaves it to :mod:`webapp.services.housekeeping`)."""
    return liveness.reap_abandoned()


def start_job(catalog: Catalog, user: User, request: JobRequest, plan: Plan,
              actor: audit.Actor, *, confirmed_hash: str | None = None,
              approved_request: int | None = None) -> Job:
    """Turn a plan into a job and launch its process (after :func:`submit`,
    or for an approved request).

    :param confirmed_hash: the plan hash the user confirmed (UI) or the
        approvers approved; when it differs from ``plan.hash`` the run is refused.
    :param approved_request: id of the approved request (protected targets).
    :raises Refused: policy (protected target without approval),
        plan_changed, busy (with the running job's id), unreachable.
    """
    target = request.target
    if target.policy.is_protected and approved_request is None:
        raise Refused(Reason.POLICY, f"{target.name} is protected: its jobs need "
                      f"{approvals_text(target.policy.approvals_required)}.")
    if confirmed_hash is not None and confirmed_hash != plan.hash:
        raise Refused(Reason.PLAN_CHANGED, "The plan changed since it was shown (the "
                      "database's current revision or the revision files changed): "
                      "review it again.")
    reap_abandoned()
    for _attempt in range(2):
        job = Job(target=target.name, command=request.command, revision=request.revision,
                  user_id=user.id, plan_hash=plan.hash, status=JobStatus.QUEUED,
                  current_before=" ".join(plan.current_before),
                  planned_revisions=" ".join(s.revision for s in plan.steps),
                  dialect=plan.dialect, heartbeat_at=utcnow(),
                  recovery=json.dumps(plan.recovery) if plan.recovery else None,
                  drop_indexes=json.dumps(plan.drop_indexes) if plan.drop_indexes else None)
        db.session.add(job)
        try:
            db.session.flush()
            db.session.add(TargetGuard(target=target.name, job_id=job.id))
            db.session.commit()
            break
        except IntegrityError:
            db.session.rollback()
            holder = running_job(target.name)
            if holder is not None and holder.is_active:
                raise Refused(Reason.BUSY, f"{target.name} is busy: job {holder.id} "
                              f"({holder.command} {holder.revision}) is {holder.status}.",
                              job_id=holder.id)
            # a guard left by a finished or vanished job: drop it and retry once
            db.session.execute(delete(TargetGuard).where(TargetGuard.target == target.name))
            db.session.commit()
    else:
        raise Refused(Reason.BUSY, f"{target.name} is busy.")
    # The plan was computed before the guard was ours: another job may have
    # moved the database in between. Holding the guard now, check it still holds.
    try:
        url = catalog.database_url(target)
        now_current = _current_heads(catalog, target, url)
    except (DatabaseUnavailable, TargetUrlMissing) as exc:
        drop_unstarted(job)
        raise _unreachable(exc)
    except Refused:
        drop_unstarted(job)
        raise
    if sorted(now_current) != sorted(plan.current_before):
        drop_unstarted(job)
        raise Refused(Reason.PLAN_CHANGED, "The plan changed since it was computed: the "
                      f"database is now at {', '.join(now_current) or 'base'}, not "
                      f"{', '.join(plan.current_before) or 'base'}. Review the plan again.")
    audit.record(actor, "job.confirm", "ok", target=target.name, job_id=job.id,
                 command=request.command, revision=request.revision, plan_hash=plan.hash,
                 steps=[s.revision for s in plan.steps], request=approved_request,
                 **({f"{plan.recovery['kind']}_of": plan.recovery["job"]}
                    if plan.recovery else {}),
                 **({"drop_invalid_indexes": [f"{i['schema']}.{i['name']}"
                                              for i in plan.drop_indexes]}
                    if plan.drop_indexes else {}))
    launch_worker(job, target, url)
    return job


def launch_worker(job: Job, target: Target, url: str) -> None:
    """Hand a confirmed job to the app's launcher (chosen once in
    ``create_app``: a local process, the target's Celery queue, or a thread
    of this process; see :mod:`webapp.services.launchers`).

    :raises Refused: :attr:`Reason.UNREACHABLE` when the broker cannot be
        reached (the job is dropped: nothing was queued).
    """
    launchers.current().launch(job, target, url)


def expect_job(catalog: Catalog, plan: Plan) -> None:
    """``plan`` was just shown to someone who may confirm it: when its
    target runs jobs directly (not protected) and it has steps, the
    launcher gets ready for a job there (a local launcher starts a warm
    standby process; :meth:`webapp.services.launchers.Launcher.prepare`).
    Best effort: a target whose URL cannot be given now just starts cold."""
    target = catalog.get(plan.target)
    if target is None or target.policy.is_protected or not plan.steps:
        return
    try:
        url = catalog.database_url(target)
    except TargetUrlMissing:
        return  # the job itself will say so
    launchers.current().prepare(target, url)


def cancel_queued(job_id: int, user: User, actor: audit.Actor) -> Job:
    """Cancel a job still waiting in the queue (no worker has taken it): it
    ends *abandoned* and frees its target. A worker that takes it later sees
    it is no longer queued and leaves it alone. When the job was a rollout
    step's, the step fails and the rollout moves on (stop on first failure
    applies), as after any job's end.

    :raises Refused: role (operator needed), not_found, not_open (a worker
        already took it, or it ended).
    """
    job = get_job(job_id)
    if job is None:
        raise Refused(Reason.NOT_FOUND, f"There is no job {job_id}.")
    from .catalog import get_catalog

    access = accounts.access_on(user, get_catalog().get(job.target))
    if not access.allows(Role.OPERATOR):
        raise needs_role(f"Cancelling a job on {job.target}", "operator", access.role.label)
    actor = actor.granted(access.granted_by(Role.OPERATOR))
    done = db.session.execute(update(Job).where(
        Job.id == job_id, Job.status == JobStatus.QUEUED, Job.worker_pid.is_(None)).values(
        status=JobStatus.ABANDONED, finished_at=utcnow(),
        error=f"Cancelled by {user.username} before a worker took it; nothing ran.")).rowcount
    if not done:
        raise Refused(Reason.NOT_OPEN, f"Job {job_id} is {job.status}: only a job waiting "
                      "for a worker can be cancelled.")
    db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job_id))
    audit.record(actor, "job.cancel", "ok", target=job.target, job_id=job_id, commit=False)
    db.session.commit()
    db.session.refresh(job)
    events.job_finished.send(job, catalog=get_catalog())  # a POST: a rollout moves on
    return job


def get_job(job_id: int) -> Job | None:
    """The job with this id, or None for an unknown or out-of-range id.
    Writes nothing itself: jobs whose process is gone are marked abandoned by
    the housekeeping (``flask housekeeping``, or its throttled fallback on
    :data:`webapp.services.events.state_read`, sent here)."""
    if not 0 < job_id < 2**63:
        return None
    events.state_read.send()
    return db.session.get(Job, job_id)


def recent_jobs(target_name: str | None = None, limit: int = 20) -> list[Job]:
    """Newest jobs first, optionally for one target (after
    :data:`webapp.services.events.state_read`, as :func:`get_job`)."""
    events.state_read.send()
    stmt = db.select(Job).order_by(Job.id.desc()).limit(limit)
    if target_name:
        stmt = stmt.where(Job.target == target_name)
    return list(db.session.execute(stmt).scalars())


def failure_report(job: Job) -> str | None:
    """A plain statement of what a failed job left behind, or None."""
    if job.status != JobStatus.FAILED:
        return None
    applied = Job.split(job.applied_revisions)
    lines = []
    if job.failed_revision:
        lines.append(f"Revision {job.failed_revision} failed.")
    if job.dialect and not is_transactional_ddl(job.dialect):
        if applied:
            lines.append(f"Earlier revisions of this job stayed applied: {', '.join(applied)}.")
        if job.failed_revision:
            lines.append(f"{job.dialect} DDL is not transactional: the DDL of "
                         f"{job.failed_revision} may be partly applied. Inspect the schema "
                         "before retrying or downgrading.")
    elif applied:
        lines.append("The failed transaction was rolled back.")
    if job.current_after is not None:
        lines.append(f"The database is now at: {job.current_after or 'base'}.")
    return " ".join(lines) or None
