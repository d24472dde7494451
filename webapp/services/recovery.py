"""Recovery jobs: resume a failed job's half-applied revision from its
statement journal, or undo what took effect of it, as jobs like any other.

On a target whose DDL is not transactional (MySQL/MariaDB, SQLite) a revision
that fails or is killed half-way leaves its first statements applied and the
version table behind. The failed job's journal (:mod:`.journal`), checked
against the live schema, says which statements took effect. A *resume job*
runs the failed job's command and revision again, skipping exactly those
statements (the agent checks each by position and SHA-256 before it skips it),
so the half-applied revision is finished and stamped and the rest of the plan
runs. It goes through :func:`webapp.services.submission.submit` with a plan
(the statements skipped are part of it and of its hash) and, on a protected
target, an approval; when the approved job starts, the plan is computed again
and must be the same.

A *compensation* (command ``compensate``, revision the half-applied one)
runs the generated inverse of the statements that took effect, newest first
(:func:`webapp.services.journal.next_steps`), on the migration's connection
under the target's lock; no revision runs and the version table, which still
names the revision before, is left as it is. It is offered only when every
statement that took effect has an inverse.
"""

from __future__ import annotations

from dataclasses import replace

from ..core.plan import Plan
from ..extensions import db
from ..models import Job, JobStatus
from . import jobs, journal
from .catalog import Catalog
from .jobs import JobRequest
from .refusals import Reason, Refused

RECOVERABLE = (JobStatus.FAILED, JobStatus.ABANDONED)


def failed_job(target_name: str, job_id: int) -> Job:
    """The failed or abandoned job ``job_id`` on target ``target_name`` (from
    the dashboard database), whose half-applied revision a resume job finishes.

    :raises Refused: :attr:`Reason.NOT_FOUND` (no such job on that target),
        :attr:`Reason.BAD_INPUT` (the job did not fail, or was no upgrade or
        downgrade), :attr:`Reason.PLAN_CHANGED` (a later job ran on the target:
        the journal no longer says where the database is).
    """
    job = db.session.get(Job, job_id)
    if job is None or job.target != target_name:
        raise Refused(Reason.NOT_FOUND, f"There is no job {job_id} on {target_name}.")
    if job.status not in RECOVERABLE or job.command not in ("upgrade", "downgrade"):
        raise Refused(Reason.BAD_INPUT, f"Job {job_id} is {job.status} ({job.command}): only "
                      "a failed or abandoned upgrade or downgrade can be resumed.")
    later = later_job(job)
    if later is not None:
        raise Refused(Reason.PLAN_CHANGED, f"Job {later} ran on {target_name} after job "
                      f"{job_id}: its journal no longer says where the database is. Plan "
                      "from the target's current state instead.")
    return job


def _half_applied(catalog: Catalog, request: JobRequest, failed: Job) -> tuple[dict, Plan]:
    """The journal report of ``failed`` (:func:`webapp.services.journal.report`)
    and the plan of its command from the database now, whose first step must
    be the half-applied revision.

    :raises Refused: :attr:`Reason.PLAN_ERROR` no journal, nothing offered
        (why), or the database moved; as ``plan_job``.
    """
    found = journal.report(failed, catalog, request.target)
    if found is None:
        raise Refused(Reason.PLAN_ERROR, f"Job {failed.id} has no statement journal (its "
                      "target's DDL is transactional, or no statement ran): nothing to recover.")
    if not found["resume_done"] and not found["resume"] and not found["compensate"]:
        raise Refused(Reason.PLAN_ERROR, _why_not(found, failed.id))
    plan = jobs.plan_job(catalog, JobRequest(request.target, failed.command, failed.revision))
    if not plan.steps or plan.steps[0].revision != found["revision"]:
        raise Refused(Reason.PLAN_ERROR, f"The database moved since job {failed.id} failed: "
                      f"its plan no longer starts with {found['revision']}. Plan from the "
                      "target's current state instead.")
    return found, plan


def later_job(job: Job) -> int | None:
    """The id of the first job that started on ``job``'s target after it (its
    journal then no longer says where the database is), or None."""
    return db.session.scalar(db.select(Job.id).where(
        Job.target == job.target, Job.id > job.id,
        Job.started_at.isnot(None)).order_by(Job.id).limit(1))


def journal_report(job: Job, catalog: Catalog, target) -> dict | None:
    """What a failed or abandoned ``job``'s statement journal says beside
    ``target``'s live schema (:func:`webapp.services.journal.report`, read-only
    agent calls); ``{"superseded_by": job id}`` without any live check when a
    later job has started on the target (the journal is history then); None
    for any other job, an unknown target, or a job without a journal."""
    if target is None or job.status not in RECOVERABLE:
        return None
    later = later_job(job)
    if later is not None:
        return {"superseded_by": later}
    return journal.report(job, catalog, target)


def resume_request(catalog: Catalog, target_name: str, job_id: int) -> JobRequest:
    """The :class:`~webapp.services.jobs.JobRequest` of a resume of job
    ``job_id`` (its command and revision, ``resume_of`` set).

    :raises Refused: as :func:`failed_job`, and not found for an unknown target.
    """
    target = catalog.get(target_name)
    if target is None:
        raise Refused(Reason.NOT_FOUND, f"There is no target called {target_name!r}.")
    job = failed_job(target_name, job_id)
    return JobRequest(target, job.command, job.revision, resume_of=job.id)


def plan_resume(catalog: Catalog, request: JobRequest) -> Plan:
    """The plan of a resume job (``request.resume_of`` set): the failed job's
    command and revision planned from the database as it is now
    (:func:`webapp.services.jobs.plan_job`), whose first step must be the
    half-applied revision, with ``recovery`` set to the statements it skips
    and the SQL headed by a note naming them.

    :raises Refused: as :func:`failed_job` and ``plan_job``;
        :attr:`Reason.PLAN_ERROR` when the journal and the live schema
        disagree, the revision file changed since the failure, its statements
        cannot be listed, or the database moved (the first step is not the
        half-applied revision).
    """
    failed = failed_job(request.target.name, request.resume_of)
    if (request.command, request.revision) != (failed.command, failed.revision):
        raise Refused(Reason.BAD_INPUT, f"A resume of job {failed.id} runs its own command: "
                      f"{failed.command} {failed.revision}.")
    found, plan = _half_applied(catalog, request, failed)
    if not found["resume_done"] and not found["resume"]:
        raise Refused(Reason.PLAN_ERROR, _why_not(found, failed.id))
    revision = found["revision"]
    done = found["resume_done"]
    skipped = ", ".join(str(d["position"]) for d in done) or "none"
    note = (f"resume of job {failed.id}: statement(s) {skipped} of {revision} took effect "
            "before it failed (its journal and the live schema agree) and are skipped; "
            f"the other {len(found['resume'])} run, then {revision} is stamped and the "
            "plan goes on.")
    # a copy: plan_job's plan is cached and shared with the plain plan
    return replace(plan, recovery={"kind": "resume", "job": failed.id, "revision": revision,
                                   "done": done}, warnings=[note, *plan.warnings],
                   sql="".join(f"-- {line}\n" for line in _skip_lines(found)) +
                   skipped_out(plan.sql, revision, found.get("planned"),
                               {d["position"] for d in done}))


def skipped_out(sql: str, revision: str, planned: list[dict] | None,
                skipped: set[int]) -> str:
    """The plan's offline ``sql`` with the statements a resume skips turned
    into SQL comments (``-- skipped: …``), so what the plan shows, lints and
    forecasts is what runs.

    :param revision: the half-applied revision: its section of ``sql`` is the
        one after the first ``-- Running upgrade … -> <revision>`` header.
    :param planned: its statements as the file renders them
        (``{"position", "sql"}``, :func:`webapp.services.journal.planned_statements`),
        in order, or None.
    :param skipped: the positions that took effect.
    :return: ``sql`` unchanged when a statement cannot be found in it (the
        forecast then errs on the side of listing too much).
    """
    import re

    header = re.search(rf"^-- Running \w+ .*-> {re.escape(revision)}\s*$", sql, re.M)
    if not planned or not skipped or header is None:
        return sql
    out, at = [sql[:header.end()]], header.end()
    for entry in planned:
        tokens = entry["sql"].split()
        found = re.compile(r"\s+".join(map(re.escape, tokens)) + r"\s*;?").search(sql, at) \
            if tokens else None
        if found is None:
            return sql
        out.append(sql[at:found.start()])
        text = found.group(0)
        if entry["position"] in skipped:
            text = "".join(f"-- skipped: {line}\n" for line in text.splitlines()).rstrip("\n")
        out.append(text)
        at = found.end()
    return "".join(out) + sql[at:]


def _skip_lines(found: dict) -> list[str]:
    """Comment lines for the plan's SQL: each statement of the half-applied
    revision, whether the resume skips or runs it."""
    done = {d["position"] for d in found["resume_done"]}
    lines = [f"Resume of {found['revision']} (statements that took effect are skipped):"]
    for entry in found["statements"]:
        first = " ".join(entry["sql"].split())[:120]
        verb = "skip" if entry["position"] in done else "run "
        lines.append(f"  {verb} {entry['position']:>3}: {first}")
    return lines


def _why_not(found: dict, job_id: int) -> str:
    """Why job ``job_id``'s journal offers no resume (for the refusal)."""
    if found.get("changed"):
        return (f"The revision file changed since job {job_id} failed: its statements are "
                "not the ones the journal recorded, so nothing can be skipped safely.")
    if found.get("agrees") is False:
        return (f"The journal of job {job_id} and the live schema disagree: resume is not "
                "offered. The job page shows both.")
    if found.get("schema_error"):
        return f"The live schema could not be read: {found['schema_error']}"
    if found.get("planned_error"):
        return f"The revision's statements cannot be listed: {found['planned_error']}"
    return (f"It cannot be told whether the statement running when job {job_id} was killed "
            "took effect: resume is not offered.")


def plan_compensate(catalog: Catalog, request: JobRequest) -> Plan:
    """The plan of a compensation (``request.compensate_of`` set, command
    ``compensate``, revision the half-applied one): no steps, the inverse
    statements as its SQL and in ``recovery``; from and to are the
    database's current revisions (the version table is not touched).

    :raises Refused: as :func:`failed_job`; :attr:`Reason.BAD_INPUT` another
        command or revision; :attr:`Reason.PLAN_ERROR` when no compensation
        is offered (a statement without an inverse, journal and schema
        disagree...) or the database moved.
    """
    failed = failed_job(request.target.name, request.compensate_of)
    found, base = _half_applied(catalog, request, failed)
    revision = found["revision"]
    if request.command != "compensate" or request.revision != revision:
        raise Refused(Reason.BAD_INPUT, f"A compensation of job {failed.id} is command "
                      f"compensate, revision {revision}.")
    statements = found["compensate"]
    if not statements:
        raise Refused(Reason.PLAN_ERROR, _why_not(found, failed.id) if not found["agrees"] else
                      f"Not every statement of {revision} that took effect has a generated "
                      "inverse (only CREATE TABLE, ADD COLUMN and CREATE INDEX do): nothing "
                      "to compensate by a job.")
    note = (f"compensation of job {failed.id}: the {len(statements)} statement(s) of "
            f"{revision} that took effect are undone, newest first; no revision runs and "
            f"the version table stays at {', '.join(base.current_before) or 'base'}.")
    return Plan(target=request.target.name, command="compensate", revision=revision,
                current_before=list(base.current_before),
                current_after=list(base.current_before), steps=[],
                sql="".join(f"{sql};\n" for sql in statements), dialect=base.dialect,
                warnings=[note], recovery={"kind": "compensate", "job": failed.id,
                                           "revision": revision, "statements": statements})


def plan_for(catalog: Catalog, request: JobRequest) -> Plan:
    """The plan of ``request``: :func:`plan_resume` for a resume job,
    :func:`plan_compensate` for a compensation, else
    :func:`webapp.services.jobs.plan_job`. :raises Refused: as those."""
    if request.resume_of is not None and request.compensate_of is not None:
        raise Refused(Reason.BAD_INPUT, "Send resume_of or compensate_of, not both.")
    if request.resume_of is not None:
        return plan_resume(catalog, request)
    if request.compensate_of is not None:
        return plan_compensate(catalog, request)
    return jobs.plan_job(catalog, request)


def guidance(job: Job, found: dict | None) -> dict | None:
    """Guided recovery for a failed or abandoned ``job``: what it applied,
    what it did not, the one recommended next step and the alternatives.

    Pure: reads only ``job`` and ``found``, the job page's journal report
    (:func:`webapp.services.journal.report`, ``{"superseded_by": id}`` when a
    later job ran on the target, or None when the job has no journal).

    :return: None for any other status; else ``{"applied": [revisions this job
        applied, still in the database], "not_applied": [planned revisions it
        did not apply, the failed one included], "failed_revision": id or
        None, "failed_state": "rolled_back" (transactional DDL: nothing of it
        stayed but an INVALID index a ``CREATE INDEX CONCURRENTLY`` outside
        the transaction left, when the error names one) | "partly_applied"
        (the journal and the live schema agree on which statements ran) |
        "unknown" (non-transactional DDL, no trustworthy journal) | None (no
        revision failed: env.py, a lock, a refusal),
        "recommended": step, "alternatives": [step, ...]}``; a step is one of
        ``"see_later_job"``, ``"resume"``, ``"compensate"``, ``"resume_by_hand"``
        (run the rest by hand, then stamp), ``"wait_for_blockers"``,
        ``"drop_invalid_index"``, ``"inspect_and_stamp"`` (compare the schema
        with the revision, stamp it when it matches), ``"fix_and_rerun"``
        (not offered when the journal shows the failed revision partly applied).
    """
    from ..core.plan import is_transactional_ddl
    from .job_process import GAVE_UP_ON_LOCK, INVALID_INDEX_LEFT

    if job.status not in RECOVERABLE:
        return None
    applied = Job.split(job.applied_revisions)
    not_applied = [r for r in Job.split(job.planned_revisions) if r not in applied]
    failed = job.failed_revision
    transactional = bool(job.dialect) and is_transactional_ddl(job.dialect)
    found = found or {}
    offers = found.get("agrees") and not found.get("changed") and not found.get("schema_error")
    if failed is None:
        state = None
    elif transactional:
        state = "rolled_back"
    else:
        state = "partly_applied" if offers else "unknown"
    error = job.error or ""
    steps: list[str] = []
    if found.get("superseded_by"):
        steps.append("see_later_job")
    if INVALID_INDEX_LEFT in error:
        steps.append("drop_invalid_index")
    if offers and (found.get("resume") or found.get("resume_done")):
        steps.append("resume")
    if offers and found.get("compensate"):
        steps.append("compensate")
    if offers and found.get("resume"):
        steps.append("resume_by_hand")
    if error.startswith(GAVE_UP_ON_LOCK):
        steps.append("wait_for_blockers")
    if state == "unknown" or (state == "partly_applied" and not steps):
        steps.append("inspect_and_stamp")  # first see what its first statements left
    if state != "partly_applied":  # run as it is, it would fail on what stayed applied
        steps.append("fix_and_rerun")
    return {"applied": applied, "not_applied": not_applied, "failed_revision": failed,
            "failed_state": state, "recommended": steps[0], "alternatives": steps[1:]}
