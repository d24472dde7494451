"""``GET /api/v1/targets/<name>/plan``: a plan for pipelines, with its lint
and blast-radius forecast (same permission as the plan page)."""

from __future__ import annotations

from dataclasses import asdict

from flask import jsonify, request
from flask_login import current_user

from ..core.forecast import forecast_live
from ..services import authorization, recovery
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from ..views.common import audits_refusals, job_request_details
from ..views.schemas import JobBody
from . import bp, hidden_from_caller


@bp.route("/targets/<name>/plan")
@audits_refusals("job.request", job_request_details)
def plan(name: str):
    """The plan of ``?command=&revision=`` from the target's current state:
    ``{"target", "command", "revision", "from", "to", "steps": [{"revision",
    "direction", "down_revisions", "message", "path", "sha256"}], "sql",
    "dialect", "lint": [finding], "warnings", "plan_hash", "forecast":
    [{"revision", "statement", "table", "rows", "bytes", "lock", "blocks",
    "rewrites", "blockers"}], "invalid_indexes": [{"schema", "name", "table",
    "left_by_job"}]}`` (INVALID indexes a failed ``CREATE INDEX CONCURRENTLY``
    left on the live PostgreSQL database; ``&drop_invalid_indexes=true``: the
    plan drops them first, its SQL and hash say so). 404 for a target the caller may not see,
    400/404 for a bad command or revision, 403 when the caller may not run
    it (the plan page's rule), 409/503 as for the plan page."""
    catalog = get_catalog()
    target = catalog.get(name)
    if target is None or hidden_from_caller(target):
        raise Refused(Reason.NOT_FOUND, f"no target called {name[:80]!r}")
    body = JobBody.load(JobBody.from_form(request.args))
    req = body.job_request(target)
    authorization.authorize(current_user, target, req.command)
    found = recovery.plan_for(catalog, req)  # ?resume_of=<failed job>: the resume's plan
    return jsonify({
        "target": target.name, "command": found.command, "revision": found.revision,
        "from": found.current_before, "to": found.current_after,
        "steps": [asdict(step) for step in found.steps], "sql": found.sql,
        "dialect": found.dialect, "lint": found.findings, "warnings": found.warnings,
        "plan_hash": found.hash, "forecast": forecast_live(
            target, found.sql, found.dialect, url=catalog.read_url(target)),
        "invalid_indexes": [{key: i.get(key) for key in ("schema", "name", "table",
                                                          "left_by_job")}
                            for i in found.invalid_indexes]})
