"""Is a job's process still there? Facts first, heartbeat silence last.

A job is declared *abandoned* only when its process is provably gone:

0. a job waiting in the queue for a worker (no process yet) is left alone;
1. same host: the job's process (pid *and* start time, so a reused pid is
   not mistaken for it) no longer exists or is a zombie — decided at once;
2. another host, or no process record: no heartbeat for
   :data:`HEARTBEAT_TIMEOUT` *and* the target database says the job's
   migration lock is free;
3. nothing can be asked (database unreachable): no heartbeat for
   :data:`LOST_TIMEOUT`.

A busy machine that delays heartbeats therefore never abandons a running
job, and a finished job never changes state (every update is conditional
on an active state).
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta
from pathlib import Path

from sqlalchemy import delete, update

from ..extensions import db
from ..models import JOB_ACTIVE, Job, JobStatus, TargetGuard, utcnow
from . import audit

HEARTBEAT_TIMEOUT = timedelta(seconds=15)
LOST_TIMEOUT = timedelta(minutes=10)
# the agent's per-step lines in the job's log (alembic_dashboard_agent.run)
_STEP_LINE = re.compile(r"^\[dashboard\] (upgrade|downgrade|stamp) (\S+) (started|done)\b",
                        re.MULTILINE)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown-boot"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def process_start_token(pid: int) -> str | None:
    """``"<boot id>:<start time in clock ticks>"`` of process ``pid`` (Linux),
    or None when it cannot be read. Together with the pid it names one
    process for ever: pids are reused, start times within a boot are not."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"


def process_alive(pid: int, token: str) -> bool:
    """True when the process ``pid`` started at ``token`` still runs (a
    zombie, which has exited, counts as gone)."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return process_start_token(pid) == token


def _verdict(job: Job, now, catalog) -> str | None:
    """Why ``job`` is abandoned, or None when it may still be running."""
    if job.status == JobStatus.QUEUED and job.worker_pid is None:
        return None  # waiting in the Celery queue for a worker: nothing runs yet
    if job.worker_host == socket.gethostname()[:255] and job.worker_pid and job.worker_start:
        if process_alive(job.worker_pid, job.worker_start):
            return None
        return (f"The job's process (pid {job.worker_pid}) is gone: it was killed or "
                "crashed.")
    if job.heartbeat_at is not None and now - job.heartbeat_at < HEARTBEAT_TIMEOUT:
        return None
    held = _lock_held(job, catalog)
    if held:
        return None
    if held is False:
        return ("The job's process stopped sending heartbeats and the target's migration "
                "lock is free: it was killed or crashed.")
    if job.heartbeat_at is None or now - job.heartbeat_at >= LOST_TIMEOUT:
        return (f"No heartbeat for {LOST_TIMEOUT.total_seconds() / 60:g} minutes and the "
                "target's migration lock cannot be checked: the job is presumed lost.")
    return None


def running_step(log: str | None) -> tuple[str, str] | None:
    """``(direction, revision)`` of the last step the job's log shows started
    and not done (the agent prints ``[dashboard] upgrade r001 started`` just
    before Alembic runs a step and ``... done; heads now: ...`` after it), or
    None when no step was in progress."""
    running = None
    for match in _STEP_LINE.finditer(log or ""):
        direction, revision, what = match.groups()
        if what == "started":
            running = (direction, revision)
        elif running == (direction, revision):
            running = None
    return running


def what_was_running(log: str | None, dialect: str | None) -> str:
    """A sentence for a job that died: the revision that was running (from
    its log, :func:`running_step`) and, where Alembic's DDL is not
    transactional for ``dialect``, that this revision's DDL may be partly
    applied. Empty when the log shows no step in progress."""
    from ..core.plan import is_transactional_ddl

    running = running_step(log)
    if running is None:
        return ""
    direction, revision = running
    text = f"It was running {direction} {revision} when it died."
    if direction == "stamp":
        return text
    if dialect and not is_transactional_ddl(dialect):
        return (f"{text} {dialect} DDL is not transactional: the DDL of {revision} may be "
                "partly applied. Inspect the schema before retrying or downgrading.")
    return f"{text} Its uncommitted transaction was rolled back by the database."


def _lock_held(job: Job, catalog) -> bool | None:
    """Ask the target database whether the job's migration lock is held."""
    from ..core.target_locks import migration_lock_held

    target = catalog.get(job.target) if catalog is not None else None
    if target is None:
        return None
    try:
        engine = catalog.engines.get(catalog.database_url(target))
    except Exception:
        return None
    return migration_lock_held(engine, target.name)


def reap_abandoned(catalog=None) -> list[int]:
    """Mark active jobs whose process is gone (see the module docstring) as
    abandoned and free their targets. Safe to call from any process at any
    time; cheap when no job is active (one indexed query).

    :param catalog: targets, to ask a database about its lock (default: the app's).
    :return: ids of the jobs marked abandoned now.
    """
    active = list(db.session.execute(db.select(Job).where(
        Job.status.in_(JOB_ACTIVE))).scalars())
    if not active:
        return []
    if catalog is None:
        from .catalog import get_catalog

        catalog = get_catalog()
    now = utcnow()
    reaped = []
    for job in active:
        why = _verdict(job, now, catalog)
        if why is None:
            continue
        running = what_was_running(job.log, job.dialect)
        why = f"{why} {running}" if running else why
        done = db.session.execute(update(Job).where(
            Job.id == job.id, Job.status.in_(JOB_ACTIVE)).values(
            status=JobStatus.ABANDONED, finished_at=utcnow(),
            error=why + " Its database lock was released by the database; the target "
                        "page shows the database's real current revision.")).rowcount
        if done:
            db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job.id))
            reaped.append(job.id)
            audit.record(audit.SYSTEM, "job.abandoned", "abandoned", target=job.target,
                         job_id=job.id, why=why, commit=False)
    db.session.commit()
    return reaped
