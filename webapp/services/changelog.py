"""Each target's changelog: every revision a job applied, reverted or
stamped, who ran it, through which job or request, how long it took, and
the job's schema diff (before/after snapshots the agent took under the
target's lock, :mod:`alembic_dashboard_agent.schema`).

Recorded by the job process when a job ends (:func:`record`, in the same
transaction as the job's outcome); read by the target page, the revision
page ("applied on staging, pending on production") and
``GET /api/v1/targets/<name>/changelog``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import select

from ..core.schema_diff import differences as schema_differences
from ..models import ApprovalRequest, ChangelogEntry, Job, JobStatus, SchemaSnapshot, db


def _stored_snapshot(target: str, schema: dict | None) -> SchemaSnapshot | None:
    """The stored row for ``schema`` (the target's latest one when it is the
    same schema: an unchanged schema is kept once), or a new row."""
    if schema is None:
        return None
    digest, body = SchemaSnapshot.encode(schema)
    latest = db.session.scalars(select(SchemaSnapshot).where(
        SchemaSnapshot.target == target).order_by(SchemaSnapshot.id.desc()).limit(1)).first()
    if latest is not None and latest.digest == digest:
        return latest
    row = SchemaSnapshot(target=target, digest=digest, body=body)
    db.session.add(row)
    db.session.flush()
    return row


def _kept(step: dict, in_database: set[str] | None) -> bool:
    """Whether a step's effect stayed (a failed transactional job rolls its
    applied steps back: PostgreSQL, SQLite's transactional DDL)."""
    if in_database is None or step["direction"] == "stamp":
        return True
    applied = step["revision"] in in_database
    return applied if step["direction"] == "upgrade" else not applied


def record(job: Job, outcome: dict, in_database: set[str] | None) -> list[ChangelogEntry]:
    """Add the changelog entries of a finished ``job`` from the agent's
    ``outcome`` (``applied_steps``, ``schema_before``/``schema_after``): one
    per step whose effect stayed, and, when a failed job changed the schema
    anyway (DDL that is not transactional: MySQL/MariaDB, SQLite's pysqlite),
    one for its failing revision with status "failed". Not committed.

    :param in_database: the revisions applied after the job (ancestors of its
        current heads), None when unknown.
    :return: the entries added ([] when the job changed nothing)."""
    before_schema, after_schema = outcome.get("schema_before"), outcome.get("schema_after")
    differences: list[dict] = []
    if before_schema is not None and after_schema is not None:
        differences = schema_differences(before_schema, after_schema)
    steps = [s for s in outcome.get("applied_steps") or [] if _kept(s, in_database)]
    schema_changed = any(d["kind"] != "version" for d in differences)
    rows = [(s["revision"], s["direction"], JobStatus.SUCCEEDED, s.get("seconds"))
            for s in steps]
    if job.status != JobStatus.SUCCEEDED and schema_changed and outcome.get("failed_revision"):
        rows.append((outcome["failed_revision"], job.command, JobStatus.FAILED, None))
    if job.command == "compensate" and schema_changed:  # no step ran: the revision it undid
        rows.append((job.revision, "compensate", job.status, None))
    if not rows:
        return []
    before = _stored_snapshot(job.target, before_schema)
    after = _stored_snapshot(job.target, after_schema)
    request_id = db.session.scalar(select(ApprovalRequest.id).where(
        ApprovalRequest.job_id == job.id))
    entries = [ChangelogEntry(
        target=job.target, revision=revision, direction=direction, status=str(status),
        job_id=job.id, request_id=request_id, user_id=job.user_id,
        at=job.finished_at or job.created_at, seconds=seconds,
        before_id=before.id if before else None, after_id=after.id if after else None,
        schema_diff=json.dumps(differences)) for revision, direction, status, seconds in rows]
    db.session.add_all(entries)
    return entries


def group_by_job(entries: list) -> list[dict]:
    """Consecutive entries of one job as ``{"job_id", "entries", "differences",
    "at", "user", "request_id", "status"}`` (the revisions of a job share its
    schema diff), newest first like ``entries``."""
    groups: list[dict] = []
    for entry in entries:
        if groups and entry.job_id is not None and groups[-1]["job_id"] == entry.job_id:
            groups[-1]["entries"].append(entry)
            continue
        groups.append({"job_id": entry.job_id, "entries": [entry],
                       "differences": entry.differences, "at": entry.at, "user": entry.user,
                       "request_id": entry.request_id})
    return groups


def entries(target: str, *, limit: int = 100, before_id: int | None = None
            ) -> list[ChangelogEntry]:
    """The target's entries, newest first, at most ``limit``; ``before_id``
    pages on (entries older than that id)."""
    query = select(ChangelogEntry).where(ChangelogEntry.target == target)
    if before_id is not None:
        query = query.where(ChangelogEntry.id < before_id)
    return list(db.session.scalars(query.order_by(ChangelogEntry.id.desc()).limit(limit)))


def as_json(entry: ChangelogEntry) -> dict:
    """An entry as the API gives it: ``{"revision", "direction", "status",
    "job", "request", "user", "at" (ISO 8601 UTC), "seconds", "schema_diff"}``."""
    return {"revision": entry.revision, "direction": entry.direction, "status": entry.status,
            "job": entry.job_id, "request": entry.request_id,
            "user": entry.user.username if entry.user else None,
            "at": entry.at.isoformat() + "Z", "seconds": entry.seconds,
            "schema_diff": entry.differences}


def last_applied(targets: Iterable[str], revision: str) -> dict[str, ChangelogEntry]:
    """{target: its latest entry for ``revision``} among ``targets`` (a
    target without one is absent), for the revision page."""
    names = list(targets)
    if not names:
        return {}
    found: dict[str, ChangelogEntry] = {}
    for entry in db.session.scalars(select(ChangelogEntry).where(
            ChangelogEntry.target.in_(names), ChangelogEntry.revision == revision)
            .order_by(ChangelogEntry.id.desc())):
        found.setdefault(entry.target, entry)
    return found

