"""The job's own process: follow a migration to its end and record it.

Called by ``webapp/worker.py`` after it has started the migration (the
agent's locked ``run``). Streams the output into the job row (the statement
journal's lines into ``job_statements``, :mod:`.journal`), records
from/to/applied/failed revisions, the checksums of applied files and the
target's changelog entries (:mod:`.changelog`), frees
the target's guard, tells the webhooks and sends
:data:`webapp.services.events.job_finished`. A job in a finished state is
never changed again (:data:`webapp.models.JOB_ACTIVE` guards every update).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select, update

from ..core.history import HistoryError
from ..core.redaction import redact_query
from ..core.runner import Standby, read_blocked, read_launch, write_run_request
from ..core.targets import scrub_secrets
from ..extensions import db
from ..models import JOB_ACTIVE, Job, JobStatus, TargetGuard, utcnow
from . import audit, changelog, events, journal
from .catalog import Catalog
from .liveness import process_start_token, what_was_running

# seconds between writes of the output, each also a heartbeat: the job page is
# at most this (+ its poll) behind
LOG_FLUSH_INTERVAL = 0.5
# A queue worker keeps an agent process started ahead of the next job
STANDBY = Standby()


def run_queued(job_id: int, catalog: Catalog) -> None:
    """Run a job taken from the Celery queue, in this worker process.

    Records which process runs it (the liveness proof), prepares the agent's
    run with this host's database URL, starts it and follows it with
    :func:`execute`. A job that is no longer queued is left alone.
    """
    started = time.time()
    claimed = db.session.execute(update(Job).where(
        Job.id == job_id, Job.status == JobStatus.QUEUED, Job.worker_pid.is_(None)).values(
        worker_pid=os.getpid(), worker_host=socket.gethostname()[:255],
        worker_start=process_start_token(os.getpid()), heartbeat_at=utcnow())).rowcount
    db.session.commit()
    if not claimed:
        return
    job = db.session.get(Job, job_id)
    target = catalog.get(job.target)
    folder = Path(tempfile.mkdtemp(prefix=f"alembic-job-{job_id}-"))
    try:
        if target is None:
            raise RuntimeError(f"target {job.target} is not configured on this worker")
        _check_user(job, target)  # a queued job may wait long: its user may have changed
        write_run_request(target, job.command, job.revision, url=catalog.database_url(target),
                          lock_name=target.name, folder=folder,
                          extra=job.run_extra())
        launch = read_launch(folder)
        proc = STANDBY.spawn(launch)
    except Exception as exc:  # this worker cannot run it: the job fails, never hangs
        shutil.rmtree(folder, ignore_errors=True)
        _finish(job_id, {"ok": False, "error": {"type": type(exc).__name__,
                                                 "message": str(exc)}},
                f"[dashboard] {type(exc).__name__}: {exc}\n", None)
        db.session.commit()
        db.session.refresh(job)
        events.job_finished.send(job, catalog=catalog)
        return
    try:
        execute(job_id, catalog, proc=proc, folder=folder, started=started)
    finally:
        STANDBY.prepare(launch)  # the next job on such a target starts warm


def fail(job_id: int, message: str) -> None:
    """End job ``job_id`` *failed* with ``message`` (added to its log) when
    whatever followed it failed itself, and send
    :data:`webapp.services.events.job_finished`. A job already finished is
    left as it is (its log gets the message). Committed."""
    from .catalog import get_catalog

    log = db.session.execute(db.select(Job.log).where(Job.id == job_id)).scalar() or ""
    _finish(job_id, {"ok": False, "error": {"type": "JobProcessError", "message": message}},
            f"{log}\n[dashboard] {message}\n", None)
    db.session.commit()
    job = db.session.get(Job, job_id)
    if job is not None:
        events.job_finished.send(job, catalog=get_catalog())


def _check_user(job: Job, target) -> None:
    """Refuse (audited) to start ``job`` unless its user is still active and
    still allowed its command on ``target`` (see
    :func:`webapp.services.authorization.authorize_run_as`).

    :raises Refused: the message names the account and why.
    """
    from .authorization import authorize_run_as
    from .refusals import Refused

    try:
        authorize_run_as(job.user, target, job.command, who="job's user")
    except Refused as exc:
        audit.record(audit.Actor(job.user.username if job.user else None, "job-process"),
                     "job.start", "refused", target=job.target, job_id=job.id,
                     reason=exc.reason, message=str(exc))
        raise


def start_error_message(error: OSError, launch: dict) -> str:
    """Why the target's process of ``launch`` (:func:`read_launch`) could not
    be started, e.g. ``cannot start the target's interpreter /x/bin/python:
    No such file or directory`` (the interpreter was removed after the
    dashboard started: the targets file check at start passed), or the
    working directory it should run in."""
    reason = error.strerror or str(error)
    if error.filename is not None and str(error.filename) == launch.get("cwd"):
        return f"cannot enter the target's working directory {launch['cwd']}: {reason}"
    return f"cannot start the target's interpreter {launch['argv'][0]}: {reason}"


def execute(job_id: int, catalog: Catalog, *, proc: subprocess.Popen | None, folder: Path,
            started: float | None = None, start_error: str | None = None) -> None:
    """Follow a queued job's migration to its end (called by ``webapp/worker.py``).

    :param proc: the target-side process already started from ``folder``, or
        None when it could not be started: the job then ends *failed* with
        ``start_error`` (:func:`start_error_message`) as its error and in its log.
    :param started: UNIX time the job process started (recorded as started_at).

    Streams output to ``job.log`` every :data:`LOG_FLUSH_INTERVAL`, sends
    heartbeats, records from/to/applied/failed revisions and frees the
    target's guard. Never raises for a failing migration.
    """
    started_at = datetime.fromtimestamp(started, UTC).replace(tzinfo=None) \
        if started else utcnow()
    moved = db.session.execute(update(Job).where(
        Job.id == job_id, Job.status == JobStatus.QUEUED).values(
        status=JobStatus.RUNNING, heartbeat_at=utcnow(), started_at=started_at)).rowcount
    db.session.commit()
    job = db.session.get(Job, job_id)
    if job is None or not moved:  # unknown, or no longer queued: never run it
        if proc is not None:
            proc.kill()
        return
    target = catalog.get(job.target)
    username = job.user.username if job.user else None
    actor = audit.Actor(username, "job-process")
    audit.record(actor, "job.start", "ok" if proc is not None else "failed",
                 target=job.target, job_id=job.id, command=job.command,
                 revision=job.revision, **({"message": start_error} if proc is None else {}))
    lines: list[str] = [f"$ {'' if job.command == 'compensate' else 'alembic '}{job.command} "
                        f"{job.revision}    # target {job.target}, job {job.id}\n"]
    outcome: dict = {}
    url = None
    try:
        if proc is None:  # nothing ran: the job says why, on its page and in the API
            outcome = {"ok": False, "not_started": True, "error": {
                "type": "StartError", "message": start_error or "the process did not start"}}
            lines.append(f"[dashboard] {outcome['error']['message']}\n")
        elif target is None:
            proc.kill()
            raise RuntimeError(f"target {job.target} is no longer configured")
        else:
            url = catalog.database_url(target)
            outcome = _run_streaming(job.id, proc, folder, url, lines)
    except Exception as exc:  # configuration problems: the job fails, it never hangs
        outcome = {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc)}}
        lines.append(f"[dashboard] {type(exc).__name__}: {exc}\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status = _finish(job.id, outcome, "".join(lines), url)
    in_database: set[str] | None = None  # None: not known
    if outcome.get("current_after") is not None and target:
        try:
            in_database = catalog.history(target).applied(outcome["current_after"])
        except HistoryError:
            pass
        if outcome.get("applied_steps"):
            record_applied_checksums(job, outcome["applied_steps"], in_database or set())
    db.session.refresh(job)  # the status _finish wrote
    changelog.record(job, outcome, in_database)
    current_after = outcome.get("current_after")
    audit.record(actor, "job.end", status, target=job.target, job_id=job.id, commit=False,
                 to=" ".join(current_after) if current_after is not None else None,
                 failed_revision=outcome.get("failed_revision"))
    db.session.commit()  # the outcome, the checksums and the audit event together
    db.session.refresh(job)
    from . import notify

    notify.send("job.finished", job.target, job=job.id, status=job.status,
                command=job.command, revision=job.revision,
                to=Job.split(job.current_after), failed_revision=job.failed_revision,
                text=f"Job {job.id} `alembic {job.command} {job.revision}` on {job.target}: "
                     f"{job.status}" + (f" (now at {job.current_after or 'base'})"
                                        if job.current_after is not None else ""))
    events.job_finished.send(job, catalog=catalog)  # e.g. a rollout's next steps start
    notify.wait_all()


def _run_streaming(job_id: int, proc: subprocess.Popen, folder: Path, url: str,
                   lines: list[str]) -> dict:
    engine = db.engine
    done = threading.Event()
    guard = threading.Lock()

    statements: list[dict] = []  # journal records read since the last flush

    def flush() -> None:
        with guard:
            text = "".join(lines)
            records = statements[:]
            del statements[:]
        values = {"log": scrub_secrets(text, url), "heartbeat_at": utcnow()}
        blocked = read_blocked(folder)
        if blocked is not None:
            values["blocked_by"] = blocked_json(blocked, url)
        with engine.begin() as conn:  # the journal with the log: one commit per flush
            journal.record(conn, job_id, records, url)
            conn.execute(update(Job).where(Job.id == job_id).values(**values))

    def beat() -> None:
        while not done.wait(LOG_FLUSH_INTERVAL):
            flush()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", "replace")
        entry = journal.parse_line(line.rstrip("\n"))
        with guard:
            if entry is not None:  # a journal line goes to job_statements, not to the log
                statements.append(entry)
            else:
                lines.append(line)
    returncode = proc.wait()
    done.set()
    thread.join()
    if statements:  # the journal's last lines (the log's are written by _finish)
        with engine.begin() as conn:
            journal.record(conn, job_id, statements, url)
    try:
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        killed = returncode < 0
        lines.append(f"[dashboard] the migration process ended with status {returncode} "
                     "and no result\n")
        return {"ok": False, "killed": killed, "error": {
            "type": "ProcessKilled" if killed else "ProcessError",
            "message": f"the migration process exited with status {returncode}"}}


def blocked_json(blocked: dict, url: str | None) -> str:
    """The ``jobs.blocked_by`` JSON of what the blocked-by watch saw
    (``{"session", "waiting", "blockers", "seen"}``), every session's query
    redacted (:func:`~webapp.core.redaction.redact_query`)."""
    def clean(sessions) -> list[dict]:
        return [{**s, "query": redact_query(s.get("query"), url)} for s in sessions or []]

    return json.dumps({"session": blocked.get("session"), "waiting": bool(blocked.get("waiting")),
                       "blockers": clean(blocked.get("blockers")),
                       "seen": clean(blocked.get("seen"))})


# how a job's error begins when it gave up on a lock, and the sentence that
# names an INVALID index it left (read back by recovery.guidance)
GAVE_UP_ON_LOCK = "Gave up waiting for a lock"
INVALID_INDEX_LEFT = "INVALID index left behind by a failed CREATE INDEX CONCURRENTLY"


def lock_failure_message(outcome: dict, message: str, url: str | None) -> str:
    """The error of a job that gave up on a lock: how often it tried under
    which guard, the sessions that blocked it (pid, user, state, query) and,
    after a failed ``CREATE INDEX CONCURRENTLY``, the INVALID index it left."""
    failure = outcome.get("lock_failure")
    parts = [message]
    if failure:
        parts[0] = (f"{GAVE_UP_ON_LOCK} after {failure['attempts']} attempt(s) "
                    f"(lock_timeout {failure['lock_timeout']:g} s, lock_retries "
                    f"{failure['lock_retries']}); the statement that timed out changed "
                    f"nothing. {message}")
        blockers = outcome.get("blocked_by") or []
        if blockers:
            parts.append("Blocked by: " + "; ".join(
                f"pid {b.get('pid')} ({b.get('user') or '?'}, {b.get('state') or '?'}"
                f"{', since ' + b['since'] if b.get('since') else ''}): "
                f"{redact_query(b.get('query'), url) or '(no current query)'}"
                for b in blockers) + ".")
    for index in outcome.get("invalid_indexes") or []:
        parts.append(f"{INVALID_INDEX_LEFT}: "
                     f"{index['schema']}.{index['index']} on {index['table']}; drop it "
                     f"(DROP INDEX CONCURRENTLY {index['schema']}.{index['index']}) before "
                     "running the revision again.")
    return " ".join(parts)


def _finish(job_id: int, outcome: dict, log: str, url: str | None) -> str:
    """Record the outcome of the agent's run (not committed); a job already in
    a finished state (declared abandoned) keeps its status: the late outcome
    goes to its log. Returns the job's final status."""
    error = outcome.get("error") or {}
    if outcome.get("ok"):
        status = JobStatus.SUCCEEDED
    elif outcome.get("killed"):
        status = JobStatus.ABANDONED
    else:
        status = JobStatus.FAILED
    message = None
    if error:
        message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        if outcome.get("busy"):
            message = ("The target database's migration lock is held by another process "
                       f"(another dashboard host or a CLI run): {error.get('message')}")
        elif outcome.get("not_started"):  # the whole message says what could not start
            message = error.get("message")
        elif outcome.get("failed_phase") == "env":
            message = f"env.py failed before any migration ran (no revision started): {message}"
        if outcome.get("lock_failure") or outcome.get("invalid_indexes"):
            message = lock_failure_message(outcome, message, url)
        message = scrub_secrets(message, url)
    if outcome.get("killed"):  # the migration process died: name what it was running
        dialect = db.session.execute(db.select(Job.dialect).where(Job.id == job_id)).scalar()
        running = what_was_running(log, dialect)
        message = f"{message}. {running}" if running else message
    message = _with_warnings(message, outcome.get("warnings") or [], url)
    current_after = outcome.get("current_after")
    values = dict(status=status, finished_at=utcnow(), heartbeat_at=utcnow(),
                  log=scrub_secrets(log, url), error=message,
                  applied_revisions=" ".join(outcome.get("applied", [])),
                  failed_revision=outcome.get("failed_revision"),
                  current_after=" ".join(current_after) if current_after is not None else None)
    if outcome.get("current_before") is not None:
        values["current_before"] = " ".join(outcome["current_before"])
    if outcome.get("blocked_by"):  # the sessions it waited on, kept after the end
        values["blocked_by"] = blocked_json({"session": None, "waiting": False,
                                             "seen": outcome["blocked_by"]}, url)
    done = db.session.execute(update(Job).where(
        Job.id == job_id, Job.status.in_(JOB_ACTIVE)).values(**values)).rowcount
    if not done:
        late = (f"\n[dashboard] the migration process ended ({status}) after this job had "
                "been declared finished; its status stays as it was.\n")
        db.session.execute(update(Job).where(Job.id == job_id).values(
            log=scrub_secrets(log + late, url)))
        status = db.session.execute(db.select(Job.status).where(Job.id == job_id)).scalar()
    db.session.execute(delete(TargetGuard).where(TargetGuard.job_id == job_id))
    return status


def _with_warnings(message: str | None, warnings: list[str], url: str | None) -> str | None:
    """The job's ``error`` text with the run's warnings added (e.g. the target's
    own code migrated the database before the migration started: ``from``/``to``
    then show that movement while ``applied`` is what the job ran). A job that
    succeeded with warnings keeps them here, beside its log."""
    if not warnings:
        return message
    text = " ".join(f"Warning: {w}." for w in warnings)
    return scrub_secrets(f"{message} {text}" if message else text, url)


def record_applied_checksums(job: Job, steps: list[dict], in_database: set[str]) -> None:
    """Remember the SHA-256 of each revision file a job applied (upgrade) and
    forget the revisions it took away (downgrade).

    :param in_database: revisions applied in the database after the job (the
        ancestors of its current heads): a step rolled back with a failed
        transaction is not recorded. The caller commits.
    """
    from ..models import AppliedRevision

    upgraded = {step["revision"]: step for step in steps
                if step["direction"] == "upgrade" and step.get("sha256")
                and step["revision"] in in_database}
    # one query for the rows already there (a job may apply hundreds of revisions)
    known = {row.revision: row for row in db.session.scalars(select(AppliedRevision).where(
        AppliedRevision.target == job.target,
        AppliedRevision.revision.in_(list(upgraded))))} if upgraded else {}
    now = utcnow()
    for revision, step in upgraded.items():
        row = known.get(revision)
        if row is None:
            row = AppliedRevision(target=job.target, revision=revision)
            db.session.add(row)
        row.sha256, row.path, row.job_id, row.applied_at = step["sha256"], step["path"], \
            job.id, now
    removed = [step["revision"] for step in steps
               if step["direction"] == "downgrade" and step["revision"] not in in_database]
    if removed:
        db.session.execute(delete(AppliedRevision).where(
            AppliedRevision.target == job.target, AppliedRevision.revision.in_(removed)))
