"""Rehearsals (dry runs): a job's migrations on a scratch copy of the target's schema.

A rehearsal never touches the real database beyond reading its schema and
version table: the agent (op ``dry_run``) builds the copy — SQLite: a copy
of the file; MariaDB/MySQL: a scratch schema from ``SHOW CREATE TABLE``,
run as a temporary account with rights on it only (or on the rehearsal
server the targets file names, ``rehearsal_url_env``; neither possible: the
rehearsal is refused); PostgreSQL: a new database from ``pg_dump
--schema-only`` — runs the plan there with every connection checked to go to
the copy, and drops it. The result is stored as a
:class:`~webapp.models.Rehearsal` tied to the plan's hash, so the plan page
and the approval request for that exact plan show "rehearsed OK on <time>"
(or the failing revision and statement).

A *stairway test* (``kind="stairway"``) uses the same copy and rules: for
every revision of an upgrade plan, upgrade, downgrade and upgrade again with
the schema snapshotted and compared in between
(:mod:`alembic_dashboard_agent.stairway`); stored the same way, shown beside
the rehearsal. With a row sample (``rows`` per table: the request's, else
the targets file's ``[targets.<name>.stairway] rows``) the rows are read
first, by the agent's read-only op ``row_sample`` through the target's
read-only URL, and handed to the stairway run, which inserts them into its
copy and checks they survive each round trip.
"""

from __future__ import annotations

import json

from sqlalchemy import select

from ..core.plan import Plan
from ..core.runner import TargetProcessError, run_agent, with_connect_timeout
from ..core.targets import Target, TargetUrlMissing, scrub_secrets
from ..core.targets_schema import STAIRWAY_ROWS_MAX
from ..extensions import db
from ..models import Rehearsal, User
from . import audit, authorization, jobs
from .catalog import Catalog
from .refusals import Reason, Refused

TIMEOUT = 600.0  # seconds for copying the schema, running the plan and dropping the copy
ROWS_PROBLEM = f"rows must be a whole number from 0 to {STAIRWAY_ROWS_MAX}"


def rehearse(catalog: Catalog, user: User, request: jobs.JobRequest, actor: audit.Actor, *,
             plan_hash: str | None = None, kind: str = "rehearsal",
             rows: int | None = None) -> Rehearsal:
    """Rehearse ``alembic command revision`` of ``request`` on a scratch copy.

    Runs synchronously in the target's own Python (up to :data:`TIMEOUT`
    seconds) and stores the outcome; a failed migration is a stored result
    (``passed`` False), not an exception.

    :param plan_hash: the plan the person saw; a different plan now is
        refused (:attr:`Reason.PLAN_CHANGED`).
    :param kind: "rehearsal" (the plan's migrations, agent op ``dry_run``) or
        "stairway" (upgrade, downgrade and upgrade again of every revision of
        an ``upgrade`` plan with the schema compared, agent op ``stairway``;
        another command is refused as bad input).
    :param rows: the stairway's row sample, rows per table (0: schema
        only; None: the target's ``[targets.<name>.stairway] rows``); read
        through the target's read-only URL (:func:`sample_rows`), copied
        to the scratch copy and checked to survive each round trip.
    :raises Refused: role/policy (as for running the job), bad input,
        nothing to do, plan changed, unreachable database, a Flask-Migrate
        app (its engine cannot be pointed at a copy: :attr:`Reason.UNSUPPORTED`),
        or a MySQL/MariaDB rehearsal that cannot be kept off the real schema
        (:attr:`Reason.UNSUPPORTED`, nothing run).
    """
    target = request.target
    if kind == "stairway" and request.command != "upgrade":
        raise Refused(Reason.BAD_INPUT, "A stairway test walks an upgrade: command must be "
                      "upgrade.")
    rows = target.stairway_rows if rows is None else rows
    if kind == "stairway" and not 0 <= rows <= STAIRWAY_ROWS_MAX:
        raise Refused(Reason.BAD_INPUT, ROWS_PROBLEM)
    actor = actor.granted(authorization.authorize(user, target, request.command))
    if target.flask_app:
        raise Refused(Reason.UNSUPPORTED, f"{target.name} is a Flask-Migrate app: its env.py "
                      "connects with the app's own engine, which cannot be pointed at a "
                      "scratch copy, so it cannot be rehearsed.")
    plan = jobs.plan_job(catalog, request)
    if plan.is_empty:
        raise Refused(Reason.NOTHING_TO_DO,
                      catalog.nothing_to_do(target, plan.current_before, "rehearse"))
    if plan_hash and plan_hash != plan.hash:
        raise Refused(Reason.PLAN_CHANGED, "The plan changed since you saw it (the database "
                      "or the revision files moved). Look at the new plan first.")
    try:
        url = catalog.database_url(target)
        rehearsal_url = target.rehearsal_database_url()
        read_url = catalog.read_url(target) if kind == "stairway" and rows else None
    except TargetUrlMissing as exc:
        raise Refused(Reason.UNREACHABLE, f"The database cannot be reached: {exc}")
    if kind == "stairway":
        data = _stairway(target, request, url, rehearsal_url, read_url, rows)
    else:
        data = _dry_run(target, request, url, rehearsal_url)
    for found in [data, *data.get("revisions", [])]:
        for key in ("error", "failing_statement"):
            if found.get(key):
                found[key] = _scrub(str(found[key]), url, rehearsal_url)[:20_000]
    row = Rehearsal(target=target.name, command=request.command, revision=request.revision,
                    plan_hash=plan.hash, passed=bool(data.get("passed")), kind=kind,
                    result=json.dumps(data), user_id=user.id)
    db.session.add(row)
    failed = data.get("failed_revision") or next(
        (r["revision"] for r in data.get("revisions", []) if not r["passed"]), None)
    audit.record(actor, kind, "passed" if row.passed else "failed", target=target.name,
                 command=request.command, revision=request.revision, plan_hash=plan.hash,
                 failed_revision=failed, commit=False)
    db.session.commit()
    return row


def _scrub(text: str, url: str, rehearsal_url: str | None) -> str:
    """``text`` without the target's URL or the rehearsal server's, nor their passwords."""
    return scrub_secrets(scrub_secrets(text, url), rehearsal_url)


def sample_rows(target: Target, read_url: str, rows: int) -> dict:
    """Up to ``rows`` rows of every table of ``target``'s default schema
    (not the version table), read by the agent's read-only op
    ``row_sample`` through ``read_url`` (the read-only account's, when the
    targets file names one): ``{"sample": [{"table", "columns", "rows":
    [[JSON-safe values]], "left_out"}]}``, parents before children.

    :raises TargetProcessError: the database could not be read."""
    return run_agent(target, {"op": "row_sample", "rows": rows,
                              "version_table": target.version_table}, url=read_url).data


def _stairway(target: Target, request: jobs.JobRequest, url: str, rehearsal_url: str | None,
              read_url: str | None, rows: int) -> dict:
    """The agent's ``stairway`` result, with the row sample when ``rows``
    (read first, through ``read_url``); ``"rows"`` added, and
    ``"sample_left_out"`` ({table: rows}) when rows were left out."""
    sample: list[dict] = []
    if rows and read_url:
        try:
            sample = sample_rows(target, read_url, rows)["sample"]
        except TargetProcessError as exc:
            return {"passed": False, "revisions": [], "setup_failed": True, "rows": rows,
                    "error": scrub_secrets(f"the row sample could not be read: "
                                           f"{exc.error_type}: {exc}", read_url)}
    data = _dry_run(target, request, url, rehearsal_url, "stairway",
                    {"rows": rows, "sample": sample})
    left_out = {s["table"]: s["left_out"] for s in sample if s.get("left_out")}
    return {**data, "rows": rows, **({"sample_left_out": left_out} if left_out else {})}


def _dry_run(target: Target, request: jobs.JobRequest, url: str, rehearsal_url: str | None,
             op: str = "dry_run", extra: dict | None = None) -> dict:
    """The agent's ``dry_run`` (or ``stairway``) result; a setup failure is a
    failed result.

    On MySQL/MariaDB the agent runs the migrations as a temporary account
    with rights on the scratch schema only, or on the rehearsal server
    (``rehearsal_url_env``); when it can do neither it runs nothing.

    :raises Refused: :attr:`Reason.UNSUPPORTED` — the rehearsal could not be
        kept off the real schema (the message says what to configure).
    """
    payload = {"op": op, "command": request.command, "revision": request.revision,
               **(extra or {})}
    if rehearsal_url:
        # a rehearsal server that does not answer fails the rehearsal, not hangs it
        payload["rehearsal_url"] = with_connect_timeout(rehearsal_url)
    try:
        return run_agent(target, payload, url=url, timeout=TIMEOUT).data
    except TargetProcessError as exc:
        if exc.error_type == "RehearsalUnsafe":
            raise Refused(Reason.UNSUPPORTED, _scrub(str(exc), url, rehearsal_url)) from None
        return {"passed": False, "steps": [], "revisions": [], "setup_failed": True,
                "error": f"{exc.error_type}: {exc}"}


def latest_for(target_name: str, plan: Plan | str, kind: str = "rehearsal"
               ) -> Rehearsal | None:
    """The newest rehearsal (``kind`` "stairway": stairway test) of exactly
    this plan (a :class:`Plan` or its hash) on ``target_name``, or None."""
    plan_hash = plan if isinstance(plan, str) else plan.hash
    return db.session.scalars(
        select(Rehearsal).where(Rehearsal.target == target_name,
                                Rehearsal.plan_hash == plan_hash, Rehearsal.kind == kind)
        .order_by(Rehearsal.id.desc()).limit(1)).first()


def get(rehearsal_id: int) -> Rehearsal | None:
    """The rehearsal ``rehearsal_id``, or None."""
    return db.session.get(Rehearsal, rehearsal_id)
