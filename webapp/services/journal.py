"""The statement journal: the agent's journal lines kept in ``job_statements``,
and what a failed job's journal says beside the live schema.

The agent prints one ``[dashboard] journal {json}`` line before and one after
every statement of a revision on a target whose DDL is not transactional
(MySQL/MariaDB, SQLite; the line format is in the agent's ``journal``
module). The job process hands each line to :func:`record_line` as it reads
it; they are kept out of the visible log. After a failure or a kill,
:func:`failed_revision_statements` lists the failing revision's statements
and :func:`cross_check` compares them with a snapshot of the live schema.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import update

from ..core.redaction import redact_query, scrub_secrets
from ..extensions import db
from ..models import JobStatement

PREFIX = "[dashboard] journal "


def is_journal_line(line: str) -> bool:
    """Whether a line of the agent's output is a journal line."""
    return line.startswith(PREFIX)


def _when(at) -> datetime:
    return datetime.fromtimestamp(float(at), UTC).replace(tzinfo=None)


def parse_line(line: str) -> dict | None:
    """One journal line of the agent's output as its record
    (``{"event", "revision", "position", "at", ...}``, ``at`` a datetime in
    UTC), or None when it is not a well-formed journal line (it is then left
    to the visible log)."""
    if not is_journal_line(line):
        return None
    try:
        record = json.loads(line[len(PREFIX):])
        record.update(revision=str(record["revision"]), position=int(record["position"]),
                      at=_when(record["at"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return record if record.get("event") in ("started", "finished") else None


def record(connection, job_id: int, records: list[dict], url: str | None) -> None:
    """Keep journal records (:func:`parse_line`) of job ``job_id`` in
    ``job_statements`` on ``connection``, in order (the caller commits). A
    "started" record inserts the row (SQL redacted:
    :func:`~webapp.core.redaction.redact_query`), a "finished" one sets its
    ``finished_at``."""
    for entry in records:
        if entry["event"] == "started":
            found = entry.get("object") or {}
            connection.execute(JobStatement.__table__.insert().values(
                job_id=job_id, revision=entry["revision"][:64], position=entry["position"],
                sha256=str(entry.get("sha256", ""))[:64],
                sql=redact_query(str(entry.get("sql", "")), url) or "",
                object_kind=found.get("kind"), object_table=found.get("table"),
                object_name=found.get("name"), started_at=entry["at"]))
        else:
            connection.execute(update(JobStatement).where(
                JobStatement.job_id == job_id, JobStatement.revision == entry["revision"],
                JobStatement.position == entry["position"]).values(finished_at=entry["at"]))


def record_line(connection, job_id: int, line: str, url: str | None) -> bool:
    """:func:`record` of one line; False (nothing kept) when it is not a
    well-formed journal line."""
    entry = parse_line(line)
    if entry is not None:
        record(connection, job_id, [entry], url)
    return entry is not None


def statements(job_id: int, revision: str) -> list[JobStatement]:
    """The journalled statements of ``revision`` in job ``job_id``, by position."""
    return list(db.session.scalars(db.select(JobStatement).where(
        JobStatement.job_id == job_id, JobStatement.revision == revision).order_by(
        JobStatement.position)))


def present_in(snapshot: dict, statement: JobStatement) -> bool | None:
    """Whether what ``statement`` creates (table, column, index) is in a
    schema snapshot (the agent's ``schema_snapshot``); None when the
    statement creates nothing the snapshot can show."""
    tables = snapshot.get("tables") or {}
    kind, table, name = statement.object_kind, statement.object_table, statement.object_name
    if kind == "table":
        return name in tables
    if kind == "column":
        return name in ((tables.get(table) or {}).get("columns") or {})
    if kind == "index":
        return any(index.get("name") == name for found in tables.values()
                   for index in found.get("indexes") or [])
    return None


def cross_check(rows: list[JobStatement], snapshot: dict | None,
                planned: list[dict] | None = None) -> dict:
    """The journal of a failing revision beside the live schema and the
    revision's own statements.

    :param rows: :func:`statements` of the failing revision.
    :param snapshot: the live schema snapshot, or None when it could not be read.
    :param planned: the revision's statements as its file renders them now
        (the agent's ``offline_sql`` with ``statements``: ``{"position",
        "sha256", "sql", "object"}``), or None when unknown.
    :return: ``{"statements": [{"position", "sql", "sha256", "state":
        "finished"|"running"|"not_run", "in_schema": bool|None, "agrees":
        bool|None}], "agrees": bool|None, "running": position|None,
        "last_finished": position|None, "changed": bool}``. A finished
        statement must have created its object, one that did not run must
        not have; a running one may or may not have (the schema says which).
        ``changed``: a journalled statement's SHA-256 is not the revision's
        statement at that position now (its file was edited): nothing agrees
        then. ``agrees`` None: the schema could not be read, or nothing to check.
    """
    found, disagreements, checked = [], 0, 0
    for row in rows:
        state = "finished" if row.finished_at is not None else "running"
        found.append({"position": row.position, "sql": row.sql, "sha256": row.sha256,
                      "state": state, "kind": row.object_kind, "table": row.object_table,
                      "name": row.object_name})
    changed = False
    if planned is not None:
        by_position = {p["position"]: p for p in planned}
        changed = any(by_position.get(s["position"], {}).get("sha256") != s["sha256"]
                      for s in found)
        last = found[-1]["position"] if found else 0
        for p in planned:
            if p["position"] > last:
                obj = p.get("object") or {}
                found.append({"position": p["position"], "sql": redact_query(p["sql"]),
                              "sha256": p["sha256"], "state": "not_run",
                              "kind": obj.get("kind"), "table": obj.get("table"),
                              "name": obj.get("name")})
    for entry in found:
        stub = JobStatement(object_kind=entry.pop("kind"), object_table=entry.pop("table"),
                            object_name=entry.pop("name"))
        in_schema = present_in(snapshot, stub) if snapshot is not None else None
        agrees = None
        if in_schema is not None and entry["state"] != "running":
            agrees = in_schema == (entry["state"] == "finished")
            checked += 1
            disagreements += not agrees
        entry.update(in_schema=in_schema, agrees=agrees)
    running = next((s["position"] for s in found if s["state"] == "running"), None)
    finished = [s["position"] for s in found if s["state"] == "finished"]
    overall = None if snapshot is None or not checked and running is None else \
        disagreements == 0 and not changed
    return {"statements": found, "agrees": overall, "running": running,
            "last_finished": finished[-1] if finished else None, "changed": changed}


def _inverse(row: JobStatement, dialect_name: str | None) -> str | None:
    """The SQL that undoes ``row`` where one exists (create table -> drop
    table, add column -> drop column, create index -> drop index), compiled
    for ``dialect_name``; None for any other statement."""
    import sqlalchemy as sa
    from alembic.ddl.base import DropColumn
    from sqlalchemy.dialects import registry

    try:
        dialect = registry.load(dialect_name or "sqlite")()
    except Exception:  # noqa: BLE001 - an unknown dialect: the generic one
        dialect = sa.engine.default.DefaultDialect()
    table = sa.Table(row.object_table or "", sa.MetaData())
    if row.object_kind == "table":
        construct = sa.schema.DropTable(table)
    elif row.object_kind == "column":
        construct = DropColumn(row.object_table, sa.Column(row.object_name, sa.Integer))
    elif row.object_kind == "index":
        construct = sa.schema.DropIndex(sa.Index(row.object_name, _table=table))
    else:
        return None
    return str(construct.compile(dialect=dialect)).strip()


PAGE_READ_TIMEOUT = 10.0  # seconds for each read of the job page's journal check


def planned_statements(catalog, target, revision: str) -> tuple[list[dict] | None, str | None]:
    """The revision's upgrade statements as its file renders them now (a
    read-only agent call in offline mode), or ``(None, why)``."""
    from ..core.runner import TargetProcessError, run_agent
    from ..core.targets import TargetUrlMissing

    try:
        data = run_agent(target, {"op": "offline_sql", "revision": revision,
                                  "direction": "upgrade", "statements": True,
                                  "version_table": target.version_table},
                         url=catalog.read_url(target), timeout=PAGE_READ_TIMEOUT).data
    except (TargetProcessError, TargetUrlMissing) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if data.get("statements") is None:
        return None, "its SQL could only be captured from a rehearsal"
    return data["statements"], None


def report(job, catalog, target) -> dict | None:
    """What the journal says of the failing revision of a failed or abandoned
    ``job`` beside ``target``'s live schema and the revision's own statements
    (read-only agent calls), for the job page; None when the job has no journal.

    :return: :func:`cross_check`'s dict plus ``"revision"``, ``"schema_error"``
        (why the live schema could not be read, or None), ``"planned_error"``
        (why the revision's statements could not be listed, or None),
        ``"planned"`` (those statements, unredacted: not for display, or None)
        and :func:`next_steps`'s ``"resume"``, ``"resume_done"`` and
        ``"compensate"``.
    """
    from .schema_compare import CompareFailed, snapshot

    revision = job.failed_revision or db.session.scalar(
        db.select(JobStatement.revision).where(JobStatement.job_id == job.id).order_by(
            JobStatement.id.desc()).limit(1))
    rows = statements(job.id, revision) if revision else []
    if not rows:
        return None
    live, error = None, None
    try:
        live = snapshot(catalog, target, timeout=PAGE_READ_TIMEOUT)
    except CompareFailed as exc:
        error = str(exc)
    planned, planned_error = planned_statements(catalog, target, revision)
    found = cross_check(rows, live, planned)
    found.update(revision=revision, schema_error=error, planned_error=planned_error,
                 planned=planned)
    found.update(next_steps(found, rows, planned, status=job.status, dialect=job.dialect))
    return found


def next_steps(found: dict, rows: list[JobStatement], planned: list[dict] | None, *,
               status: str, dialect: str | None) -> dict:
    """What can be done about a half-applied revision, from its
    :func:`cross_check` (``found``), its journal ``rows`` and its statements
    as the file renders them now (``planned``, or None when unknown).

    :param status: the failed job's status: after a kill (``"abandoned"``)
        inside a statement whose object the schema cannot show, nothing is
        offered (it may or may not have taken effect).
    :return: ``{"resume": [SQL still to run, in order], "resume_done":
        [{"position", "sha256"}] (the statements that took effect: what a
        resume job skips), "compensate": [inverse SQL, newest first]}``;
        each list empty when journal and schema do not agree, the statements
        are unknown, or (``compensate``) one statement has no inverse.
    """
    steps: dict = {"resume": [], "resume_done": [], "compensate": []}
    if not found["agrees"]:
        return steps
    took_effect = [s for s in found["statements"] if s["state"] == "finished" or
                   (s["state"] == "running" and s["in_schema"])]
    done = {s["position"] for s in took_effect}
    unsure = found["running"] is not None and found["running"] not in done and \
        found["statements"][found["running"] - 1]["in_schema"] is None and \
        status == "abandoned"  # killed inside a statement the schema cannot show
    if unsure:
        return steps
    if planned is not None:
        steps["resume"] = [scrub_secrets(p["sql"].strip(), None) for p in planned
                           if p["position"] not in done]
        steps["resume_done"] = [{"position": s["position"], "sha256": s["sha256"]}
                                for s in took_effect]
    by_position = {row.position: row for row in rows}
    inverses = [_inverse(by_position[s["position"]], dialect) if s["position"] in
                by_position else None for s in reversed(took_effect)]
    if all(inverses):
        steps["compensate"] = inverses
    return steps
