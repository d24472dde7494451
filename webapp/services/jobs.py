"""Jobs: plan, authorise, guard, launch and run Alembic commands on targets.

A confirmed plan becomes a :class:`~webapp.models.Job` row plus a
:class:`~webapp.models.TargetGuard` row (one per target, enforced by its
primary key in the shared dashboard database). The job then runs in its own
process (``webapp/worker.py JOB_ID FOLDER``, detached from the web worker),
which holds the lock on the target database itself through the target-side
helper, streams the output into the job row, and sends heartbeats. A job
whose heartbeats stop is marked *abandoned* by :func:`reap_abandoned`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from ..core.history import HistoryError
from ..core.plan import Plan, PlanError, compute_plan, is_transactional_ddl, validate_request
from ..core.runner import TargetProcessError, write_run_request
from ..core.status import DatabaseUnavailable, current_heads
from ..core.targets import Target, TargetUrlMissing, scrub_secrets
from ..extensions import db
from ..models import JOB_ACTIVE, Job, TargetGuard, User, utcnow
from . import audit
from .catalog import Catalog

HEARTBEAT_TIMEOUT = timedelta(seconds=15)  # no heartbeat for this long → abandoned
# seconds between writes of the output, each also a heartbeat: the job page is
# at most this (+ its poll) behind
LOG_FLUSH_INTERVAL = 0.5
PROJECT_ROOT = Path(__file__).resolve().parents[2]
_UNREACHABLE_ERRORS = ("OperationalError", "InterfaceError", "TimeoutError")


class JobRefused(Exception):
    """A job (or its plan) is refused.

    ``status`` is the HTTP status (400, 403, 404, 409, 503), ``reason`` one of
    role, policy, bad_input, not_found, busy, plan_changed, plan_error,
    unreachable; ``job_id`` names the running job when ``reason == "busy"``.
    """

    def __init__(self, status: int, reason: str, message: str, job_id: int | None = None):
        self.status, self.reason, self.job_id = status, reason, job_id
        super().__init__(message)


@dataclass
class JobRequest:
    """A user's request: which target, command and revision (already parsed)."""

    target: Target
    command: str
    revision: str


def authorize(user: User, target: Target, command: str) -> None:
    """Server-side role and policy checks for running ``command`` on ``target``.

    On a protected target passing these checks allows a *request*; the job
    itself needs approvals (see :mod:`webapp.services.approvals`).

    :raises JobRefused: 403 with reason "role" or "policy".
    """
    if not user.has_role("operator"):
        raise JobRefused(403, "role", "Running migrations needs the operator role; "
                         f"you are a {user.role}.")
    if command == "stamp" and not user.has_role("admin"):
        raise JobRefused(403, "role", "stamp needs the admin role: it rewrites the version "
                         "table without running migrations.")
    if command == "downgrade" and not target.policy.allow_downgrade:
        raise JobRefused(403, "policy", f"The policy of {target.name} does not allow "
                         "downgrades (allow_downgrade = false).")


def _unreachable(exc: Exception) -> JobRefused:
    """503 for a database (or its URL, or the app that knows it) out of reach."""
    detail = f"{exc.error_class}: {exc}" if isinstance(exc, DatabaseUnavailable) else str(exc)
    return JobRefused(503, "unreachable", f"The database cannot be reached: {detail}")


def plan_job(catalog: Catalog, request: JobRequest) -> Plan:
    """Validate the revision against the target's history and compute the plan.

    :raises JobRefused: 400/404 bad input, 400 plan error (Alembic refused),
        503 database unreachable or env.py failing.
    """
    target = request.target
    try:
        history = catalog.history(target)
    except HistoryError as exc:
        raise JobRefused(409, "plan_error", f"The script directory cannot be read: {exc}")
    try:
        validate_request(request.command, request.revision, set(history.by_id))
    except PlanError as exc:
        raise JobRefused(400, "bad_input", str(exc))
    except LookupError as exc:
        raise JobRefused(404, "bad_input", str(exc))
    try:
        url = catalog.database_url(target)
        current = _current_or_base(catalog, target, url)
        # A plan depends only on the revision files and the database's current
        # revisions: the confirm step reuses the plan it showed unless either moved.
        key = ("plan", target.name, request.command, request.revision, current,
               history.fingerprint, hashlib.sha256(url.encode()).hexdigest())
        return catalog.plans.get_or_compute(key, lambda: compute_plan(
            target, request.command, request.revision, url=url, heads=history.heads))
    except (DatabaseUnavailable, TargetUrlMissing) as exc:
        raise _unreachable(exc)
    except PlanError as exc:
        raise JobRefused(400, "plan_error", f"Alembic cannot plan this: {exc}")
    except TargetProcessError as exc:
        if exc.error_type in _UNREACHABLE_ERRORS:
            raise JobRefused(503, "unreachable", f"The database cannot be reached: "
                             f"{exc.error_type}: {exc}")
        raise JobRefused(422, "plan_error", "The plan could not be computed (env.py or a "
                         f"revision failed in offline mode): {exc.error_type}: {exc}")


def quick_upgrade_plan(catalog: Catalog, request: JobRequest) -> Plan | None:
    """A plan of steps only, computed in this process from the history's
    RevisionMap, for API upgrades to ``head``, ``heads`` or a revision id.

    Pipelines do not review SQL before they run, so the API skips rendering
    the offline SQL of every pending revision in the target's process (the
    largest part of a POST's time). The steps, the current revisions and the
    files' checksums are still pinned, and the job process refuses to run if
    the database moved. Returns None when the full plan is needed (other
    commands, relative revisions, multiple heads for ``head``, unknown ids).

    :raises JobRefused: 503 when the database cannot be read.
    """
    from sqlalchemy.engine import make_url

    from ..core.plan import PlanStep
    from .checks import file_sha256

    target = request.target
    if request.command != "upgrade" or request.revision in ("+1", "-1", "base"):
        return None
    try:
        history = catalog.history(target)
        url = catalog.database_url(target)
        current = _current_or_base(catalog, target, url)
    except HistoryError:
        return None
    except (DatabaseUnavailable, TargetUrlMissing, TargetProcessError) as exc:
        raise _unreachable(exc)
    if request.revision not in ("head", "heads") and request.revision not in history.by_id:
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
    return Plan(target=target.name, command="upgrade", revision=request.revision,
                current=list(current), heads_after=[], steps=steps,
                sql="-- offline SQL not rendered for API jobs (GET /targets/<name>/pending.sql)",
                dialect=make_url(url).get_backend_name())


def _current_or_base(catalog: Catalog, target: Target, url: str) -> tuple[str, ...]:
    """Current heads, sorted; a SQLite file that does not exist yet is at base.

    :raises DatabaseUnavailable: the database cannot be read.
    """
    try:
        return tuple(sorted(current_heads(catalog.engines.get(url), target.version_table)))
    except DatabaseUnavailable as exc:
        if exc.error_class == "FileNotFoundError":
            return ()
        raise


def running_job(target_name: str) -> Job | None:
    """The job currently holding ``target_name``'s guard, if any."""
    guard = db.session.get(TargetGuard, target_name)
    return db.session.get(Job, guard.job_id) if guard is not None else None


def reap_abandoned() -> list[int]:
    """Mark active jobs without a recent heartbeat as abandoned and free their
    targets. Safe to call from any process at any time.

    :return: ids of the jobs marked abandoned now.
    """
    cutoff = utcnow() - HEARTBEAT_TIMEOUT
    stale = list(db.session.execute(db.select(Job).where(
        Job.status.in_(JOB_ACTIVE), Job.heartbeat_at < cutoff)).scalars())
    reaped = []
    for job in stale:
        done = db.session.execute(update(Job).where(
            Job.id == job.id, Job.status.in_(JOB_ACTIVE), Job.heartbeat_at < cutoff
        ).values(status="abandoned", finished_at=utcnow(),
                 error="The job's process stopped sending heartbeats (killed or crashed). "
                       "Its database lock was released by the database; the target "
                       "page shows the database's real current revision.")
        ).rowcount
        db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job.id))
        if done:
            reaped.append(job.id)
            audit.record(audit.SYSTEM, "job.abandoned", "abandoned", target=job.target,
                         job_id=job.id, commit=False)
    db.session.commit()
    return reaped


def start_job(catalog: Catalog, user: User, request: JobRequest, plan: Plan,
              actor: audit.Actor, *, confirmed_hash: str | None = None,
              approved_request: int | None = None) -> Job:
    """Turn a plan into a job and launch its process.

    :param confirmed_hash: the plan hash the user confirmed (UI) or the
        approvers approved; when it differs from ``plan.hash`` the run is refused.
    :param approved_request: id of the approved request (protected targets).
    :raises JobRefused: 403 protected target without approval, 409
        plan_changed, 409 busy (with the running job's id).
    """
    target = request.target
    if target.policy.is_protected and approved_request is None:
        raise JobRefused(403, "policy", f"{target.name} is protected: its jobs need "
                         f"{target.policy.approvals_required} approval(s).")
    if confirmed_hash is not None and confirmed_hash != plan.hash:
        raise JobRefused(409, "plan_changed", "The plan changed since it was shown (the "
                         "database's current revision or the revision files changed): "
                         "review it again.")
    reap_abandoned()
    for _attempt in range(2):
        job = Job(target=target.name, command=request.command, revision=request.revision,
                  user_id=user.id, plan_hash=plan.hash, status="queued",
                  from_revisions=" ".join(plan.current),
                  planned_revisions=" ".join(s.revision for s in plan.steps),
                  dialect=plan.dialect, heartbeat_at=utcnow())
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
                raise JobRefused(409, "busy", f"{target.name} is busy: job {holder.id} "
                                 f"({holder.command} {holder.revision}) is {holder.status}.",
                                 job_id=holder.id)
            # a guard left by a finished or vanished job: drop it and retry once
            db.session.execute(delete(TargetGuard).where(TargetGuard.target == target.name))
            db.session.commit()
    else:
        raise JobRefused(409, "busy", f"{target.name} is busy.")
    # The plan was computed before the guard was ours: another job may have
    # moved the database in between. Holding the guard now, check it still holds.
    try:
        url = catalog.database_url(target)
        now_current = _current_or_base(catalog, target, url)
    except (DatabaseUnavailable, TargetUrlMissing) as exc:
        _drop(job)
        raise _unreachable(exc)
    if sorted(now_current) != sorted(plan.current):
        _drop(job)
        raise JobRefused(409, "plan_changed", "The plan changed since it was computed: the "
                         f"database is now at {', '.join(now_current) or 'base'}, not "
                         f"{', '.join(plan.current) or 'base'}. Review the plan again.")
    audit.record(actor, "job.confirm", "ok", target=target.name, job_id=job.id,
                 command=request.command, revision=request.revision, plan_hash=plan.hash,
                 steps=[s.revision for s in plan.steps], request=approved_request)
    launch_worker(job, target, url)
    return job


def _drop(job: Job) -> None:
    """Remove a job that never started, and its guard."""
    db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job.id))
    db.session.execute(delete(Job).where(Job.id == job.id))
    db.session.commit()


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
    return env


def launch_worker(job: Job, target: Target, url: str) -> subprocess.Popen:
    """Prepare the migration and start ``webapp/worker.py JOB_ID FOLDER`` in its
    own session, so it outlives the web request and the gunicorn worker that
    started it. FOLDER (private, 0700) holds the helper's request."""
    folder = Path(tempfile.mkdtemp(prefix=f"alembic-job-{job.id}-"))
    write_run_request(target, job.command, job.revision, url=url,
                      lock_name=target.name, folder=folder,
                      extra={"expect_current": Job.split(job.from_revisions)})
    log_path = Path(current_app.instance_path) / "jobs.log"
    with open(log_path, "a", encoding="utf-8") as log:
        return subprocess.Popen([sys.executable, str(PROJECT_ROOT / "webapp" / "worker.py"),
                                 str(job.id), str(folder)],
                                cwd=PROJECT_ROOT, env=worker_environment(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)


def get_job(job_id: int) -> Job | None:
    """The job with this id (after reaping abandoned jobs), or None."""
    reap_abandoned()
    return db.session.get(Job, job_id)


def recent_jobs(target_name: str | None = None, limit: int = 20) -> list[Job]:
    """Newest jobs first, optionally for one target."""
    stmt = db.select(Job).order_by(Job.id.desc()).limit(limit)
    if target_name:
        stmt = stmt.where(Job.target == target_name)
    return list(db.session.execute(stmt).scalars())


def failure_report(job: Job) -> str | None:
    """A plain statement of what a failed job left behind, or None."""
    if job.status != "failed":
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
    if job.to_revisions is not None:
        lines.append(f"The database is now at: {job.to_revisions or 'base'}.")
    return " ".join(lines) or None


# --- in the job's own process -------------------------------------------------

def execute(job_id: int, catalog: Catalog, *, proc: subprocess.Popen, folder: Path,
            started: float | None = None) -> None:
    """Follow a queued job's migration to its end (called by ``webapp/worker.py``).

    :param proc: the target-side process already started from ``folder``.
    :param started: UNIX time the job process started (recorded as started_at).

    Streams output to ``job.log`` every :data:`LOG_FLUSH_INTERVAL`, sends
    heartbeats, records from/to/applied/failed revisions and frees the
    target's guard. Never raises for a failing migration.
    """
    job = db.session.get(Job, job_id)
    if job is None or job.status != "queued":
        proc.kill()
        return
    target = catalog.get(job.target)
    username = job.user.username if job.user else None
    actor = audit.Actor(username, "job-process")
    job.status, job.heartbeat_at = "running", utcnow()
    job.started_at = datetime.fromtimestamp(started, UTC).replace(tzinfo=None) \
        if started else utcnow()
    job.worker_pid, job.worker_host = os.getpid(), socket.gethostname()[:255]
    db.session.commit()
    audit.record(actor, "job.start", "ok", target=job.target, job_id=job.id,
                 command=job.command, revision=job.revision)
    lines: list[str] = [f"$ alembic {job.command} {job.revision}    "
                        f"# target {job.target}, job {job.id}\n"]
    outcome: dict = {}
    url = None
    try:
        if target is None:
            proc.kill()
            raise RuntimeError(f"target {job.target} is no longer configured")
        url = catalog.database_url(target)
        outcome = _run_streaming(job.id, proc, folder, url, lines)
    except Exception as exc:  # configuration problems: the job fails, it never hangs
        outcome = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
        lines.append(f"[dashboard] {type(exc).__name__}: {exc}\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _finish(job.id, outcome, "".join(lines), url)
    job = db.session.get(Job, job_id)
    db.session.refresh(job)
    if outcome.get("applied_steps") and outcome.get("after") is not None and target:
        try:
            in_database = catalog.history(target).applied(outcome["after"])
        except HistoryError:
            in_database = set()
        record_applied_checksums(job, outcome["applied_steps"], in_database)
    audit.record(actor, "job.end", job.status, target=job.target, job_id=job.id,
                 to=job.to_revisions, failed_revision=job.failed_revision)
    from . import notify

    notify.send("job.finished", job.target, job=job.id, status=job.status,
                command=job.command, revision=job.revision,
                to=Job.split(job.to_revisions), failed_revision=job.failed_revision,
                text=f"Job {job.id} `alembic {job.command} {job.revision}` on {job.target}: "
                     f"{job.status}" + (f" (now at {job.to_revisions or 'base'})"
                                        if job.to_revisions is not None else ""))
    notify.wait_all()


def _run_streaming(job_id: int, proc: subprocess.Popen, folder: Path, url: str,
                   lines: list[str]) -> dict:
    engine = db.engine
    done = threading.Event()
    guard = threading.Lock()

    def flush() -> None:
        with guard:
            text = "".join(lines)
        with engine.begin() as conn:
            conn.execute(update(Job).where(Job.id == job_id).values(
                log=scrub_secrets(text, url), heartbeat_at=utcnow()))

    def beat() -> None:
        while not done.wait(LOG_FLUSH_INTERVAL):
            flush()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    assert proc.stdout is not None
    for raw in proc.stdout:
        with guard:
            lines.append(raw.decode("utf-8", "replace"))
    returncode = proc.wait()
    done.set()
    thread.join()
    try:
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        killed = returncode < 0
        lines.append(f"[dashboard] the migration process ended with status {returncode} "
                     "and no result\n")
        return {"ok": False, "killed": killed, "error": {
            "type": "ProcessKilled" if killed else "ProcessError",
            "message": f"the migration process exited with status {returncode}"}}


def _finish(job_id: int, outcome: dict, log: str, url: str | None) -> None:
    error = outcome.get("error") or {}
    if outcome.get("ok"):
        status = "succeeded"
    elif outcome.get("killed"):
        status = "abandoned"
    else:
        status = "failed"
    message = None
    if error:
        message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        if outcome.get("busy"):
            message = ("The target database's migration lock is held by another process "
                       f"(another dashboard host or a CLI run): {error.get('message')}")
        message = scrub_secrets(message, url)
    after = outcome.get("after")
    values = dict(status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
                  log=scrub_secrets(log, url), error=message,
                  applied_revisions=" ".join(outcome.get("applied", [])),
                  failed_revision=outcome.get("failed_revision"),
                  to_revisions=" ".join(after) if after is not None else None)
    if outcome.get("before") is not None:
        values["from_revisions"] = " ".join(outcome["before"])
    db.session.execute(update(Job).where(Job.id == job_id).values(**values))
    db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job_id))
    db.session.commit()


def record_applied_checksums(job: Job, steps: list[dict], in_database: set[str]) -> None:
    """Remember the SHA-256 of each revision file a job applied (upgrade) and
    forget the revisions it took away (downgrade).

    :param in_database: revisions applied in the database after the job (the
        ancestors of its current heads): a step rolled back with a failed
        transaction is not recorded.
    """
    from ..models import AppliedRevision

    for step in steps:
        revision = step["revision"]
        if step["direction"] == "upgrade" and step.get("sha256") and revision in in_database:
            row = db.session.get(AppliedRevision, (job.target, revision))
            if row is None:
                row = AppliedRevision(target=job.target, revision=revision)
                db.session.add(row)
            row.sha256, row.path, row.job_id = step["sha256"], step["path"], job.id
            row.applied_at = utcnow()
        elif step["direction"] == "downgrade" and revision not in in_database:
            db.session.execute(delete(AppliedRevision).where(
                AppliedRevision.target == job.target, AppliedRevision.revision == revision))
    db.session.commit()
