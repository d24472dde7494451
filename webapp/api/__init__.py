"""JSON API ``/api/v1`` for pipelines (shapes fixed: README "API").

Authentication: ``Authorization: Bearer <token>`` or a logged-in session.
Bearer requests need no CSRF token; session requests that change state must
send the ``X-CSRFToken`` header.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

from ..auth_setup import authenticated_by_token
from ..core.history import HistoryError
from ..extensions import csrf
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from ..views.refusals import http_status

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


@bp.before_request
def csrf_for_sessions():
    """CSRF applies to every state change except those authenticated by a
    valid bearer token (any other ``Authorization`` header changes nothing)."""
    from flask import request

    if request.method not in ("GET", "HEAD", "OPTIONS") and not authenticated_by_token():
        csrf.protect()


@bp.before_request
def json_object_body():
    """Every state change takes a JSON object or no body at all: a body that
    is not JSON (a form, text), or JSON that is not an object (``[1]``,
    ``"lgtm"``), is a 400 before the view runs, so it never counts as an
    empty decision or an empty spec. A body without a ``Content-Type`` is
    read as no body, as before."""
    from flask import request

    if request.method in ("GET", "HEAD", "OPTIONS") or not request.mimetype:
        return None
    if not request.is_json:
        # the form may already be parsed (web_input's checks): its stream is then empty
        if request.content_length or request.form or request.files or request.get_data():
            return _bad_body("send a JSON object with Content-Type: application/json")
        return None
    if request.get_data(cache=True) and not isinstance(request.get_json(silent=True), dict):
        return _bad_body("the body must be a JSON object ({...})")
    return None


# the audit action under which each endpoint's views record their refusals
_REFUSAL_ACTIONS = {"api.create_job": "job.request", "api.create_rehearsal": "rehearsal",
                    "api.request_decide": "request.decide", "api.job_cancel": "job.cancel",
                    "api.rollout_create": "rollout.create"}


def _bad_body(detail: str):
    """A 400 ``{"error": "bad_input", "detail"}``, audited like the view's own
    refusals (the body itself is not recorded)."""
    from flask import request

    from ..services import audit

    action = _REFUSAL_ACTIONS.get(request.endpoint or "", "api.request")
    audit.record(_api_actor(), action, "denied", reason=Reason.BAD_INPUT, message=detail,
                 via="api", path=request.path[:200])
    return jsonify(error=Reason.BAD_INPUT, detail=detail), 400


@bp.route("/targets")
def targets():
    """``[{"name", "tier", "current", "heads", "pending", "reachable"}]`` for every target.

    Extra fields: ``label``, ``error`` (why unreachable; no password). Only
    the targets on which the caller has at least the viewer role.
    """
    from flask_login import current_user

    from ..services import accounts

    catalog = get_catalog()
    result = []
    for status in catalog.statuses(accounts.visible_targets(current_user,
                                                            catalog.targets.values())):
        result.append({
            "name": status.target.name,
            "label": status.target.label,
            "tier": status.target.tier,
            "current": list(status.current),
            "heads": list(status.heads),
            "pending": len(status.pending),
            "reachable": status.reachable,
            "error": status.problem,
        })
    return jsonify(result)


@bp.route("/targets/<name>/history")
def history(name: str):
    """Revisions newest first: ``revision``, ``down_revision`` (list), ``message``,
    ``is_head``, ``is_branch_point``, ``is_merge_point``, ``applied`` (bool, or
    null when the database is unreachable), plus ``branch_labels``,
    ``depends_on``, ``create_date``, ``has_downgrade`` (False: the file has no
    ``downgrade()`` function, read from its source)."""
    catalog = get_catalog()
    target = catalog.get(name)
    if target is None or _hidden(target):
        abort(404, description=f"no target called {name[:80]!r}")
    status = catalog.status(target)
    if status.history is None:
        return jsonify(error="script directory unreadable", detail=status.history_error), 409
    applied: set[str] | None = None
    if status.reachable and not status.unknown_current:
        try:
            applied = status.history.applied(status.current)
        except HistoryError:
            applied = None
    return jsonify([{
        "revision": info.revision,
        "down_revision": list(info.down_revisions),
        "message": info.message,
        "is_head": info.is_head,
        "is_branch_point": info.is_branch_point,
        "is_merge_point": info.is_merge_point,
        "applied": (info.revision in applied) if applied is not None else None,
        "branch_labels": list(info.branch_labels),
        "depends_on": list(info.depends_on),
        "create_date": info.create_date,
        "has_downgrade": info.has_downgrade,
    } for info in status.history.revisions])


def _hidden(target) -> bool:
    """True (audited) when the caller may not see ``target`` (below viewer
    there): the API then answers as for a name (or a job) that does not exist,
    so the answer never tells which target names exist."""
    from flask import request
    from flask_login import current_user

    from ..core.permissions import Role
    from ..services import accounts, audit

    role = accounts.role_on(current_user, target)
    if role >= Role.VIEWER:
        return False
    audit.record(_api_actor(), "access", "denied", target=target.name if target else None,
                 reason="role", needed="viewer", role=role.label, path=request.path[:200],
                 via="api")
    return True


def _api_actor():
    from flask import request
    from flask_login import current_user

    from ..services import audit

    return audit.Actor.of(current_user, request.remote_addr)


def job_json(job) -> dict:
    """A job in the fixed shape of ``GET /api/v1/jobs/<id>`` (plus extras)."""
    from ..models import Job
    from ..services.jobs import failure_report

    def iso(value):
        return value.isoformat(timespec="seconds") + "Z" if value else None

    return {
        "id": job.id, "target": job.target, "command": job.command, "revision": job.revision,
        "status": job.status, "from": Job.split(job.from_revisions),
        "to": Job.split(job.to_revisions) if job.to_revisions is not None else None,
        "log": job.log, "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "created_at": iso(job.created_at), "applied": Job.split(job.applied_revisions),
        "failed_revision": job.failed_revision, "error": job.error,
        "report": failure_report(job), "user": job.user.username if job.user else None,
    }


def _job_request(target, name: str, payload):
    """The :class:`~webapp.services.jobs.JobRequest` of a JSON body
    ``{"command", "revision"}`` for ``target`` (None when ``name`` is unknown).

    :raises Refused: unknown target or one the caller may not see (404, the same
        answer), malformed body or overlong fields (400).
    """
    from ..services import jobs

    if target is None or _hidden(target):
        raise Refused(Reason.NOT_FOUND, f"no target called {name[:80]!r}")
    if not isinstance(payload, dict) or not isinstance(payload.get("command"), str) \
            or not isinstance(payload.get("revision"), str):
        raise Refused(Reason.BAD_INPUT, 'send JSON {"command": "upgrade" | '
                                        '"downgrade" | "stamp", "revision": "<rev>"}')
    command, revision = payload["command"].strip(), payload["revision"].strip()
    if len(command) > 32 or len(revision) > 200:
        raise Refused(Reason.BAD_INPUT, "command or revision is too long")
    return jobs.JobRequest(target, command, revision)


@bp.route("/targets/<name>/jobs", methods=["POST"])
def create_job(name: str):
    """Plan and start ``{"command", "revision"}`` on a target.

    202 ``{"job": id, "status"}``; 409 ``{"error": "busy", "job": id}`` when
    a job runs; 403 for role/policy; 400/404 for bad input; every refusal
    is audited.
    """
    from flask import request
    from flask_login import current_user

    from ..services import audit, jobs

    catalog = get_catalog()
    payload = request.get_json(silent=True)
    target = catalog.get(name)
    try:
        job_request = _job_request(target, name, payload)
        reason = payload.get("reason") if isinstance(payload.get("reason"), str) else ""
        submitted = jobs.submit(catalog, current_user, job_request,
                                _api_actor(), reason=reason or "requested through the API",
                                fast_plan=True)
        if submitted.request is not None:
            return jsonify({"request": submitted.request.id,
                            "status": submitted.request.status}), 202
        job = submitted.job
    except Refused as exc:
        details = payload if isinstance(payload, dict) else {}
        audit.record(_api_actor(), "job.request", "denied", target=name[:64],
                     reason=exc.reason, message=str(exc), via="api",
                     command=str(details.get("command", ""))[:32],
                     revision=str(details.get("revision", ""))[:64], running_job=exc.job_id)
        body = {"error": exc.reason, "detail": str(exc)}
        if exc.job_id is not None:
            body["job"] = exc.job_id
        return jsonify(body), http_status(exc)
    return jsonify({"job": job.id, "status": job.status}), 202


@bp.route("/targets/<name>/rehearsals", methods=["POST"])
def create_rehearsal(name: str):
    """Rehearse ``{"command", "revision"}`` on a scratch copy of the target's
    schema (synchronous; the real database is only read).

    201 ``{"rehearsal": id, "passed", "plan_hash", "steps": [{"revision",
    "seconds"}], "seconds", "failed_revision", "failing_statement", "error",
    "copy", "started_at"}``; refusals as for jobs (403, 400/404, 409, 422, 503).
    """
    from flask import request
    from flask_login import current_user

    from ..services import audit, rehearsals

    catalog = get_catalog()
    payload = request.get_json(silent=True)
    target = catalog.get(name)
    try:
        row = rehearsals.rehearse(catalog, current_user, _job_request(target, name, payload),
                                  _api_actor())
    except Refused as exc:
        audit.record(_api_actor(), "rehearsal", "denied", target=name[:64], reason=exc.reason,
                     message=str(exc), via="api")
        return jsonify({"error": exc.reason, "detail": str(exc)}), http_status(exc)
    return jsonify({"rehearsal": row.id, "passed": row.passed, "plan_hash": row.plan_hash,
                    **row.details}), 201


@bp.route("/jobs/<int:job_id>")
def job(job_id: int):
    """``{"id", "target", "command", "revision", "status", "from", "to", "log",
    "started_at", "finished_at"}`` (UTC ISO 8601) plus ``applied``,
    ``failed_revision``, ``error``, ``report``."""
    from ..services import jobs

    found = jobs.get_job(job_id)
    if found is None or _hidden(get_catalog().get(found.target)):
        abort(404, description=f"no job {job_id}")
    return jsonify(job_json(found))


@bp.route("/jobs/<int:job_id>/cancel", methods=["POST"])
def job_cancel(job_id: int):
    """Cancel a job still waiting for a queue worker: the job's JSON, or
    ``{"error", "detail"}`` with 403/404/409."""
    from flask_login import current_user

    from ..services import audit, jobs

    try:
        found = jobs.cancel_queued(job_id, current_user, _api_actor())
    except Refused as exc:
        audit.record(_api_actor(), "job.cancel", "denied", job_id=job_id, reason=exc.reason,
                     message=str(exc), via="api")
        return jsonify({"error": exc.reason, "detail": str(exc)}), http_status(exc)
    return jsonify(job_json(found))


def request_json(found) -> dict:
    """An approval request as JSON (``GET /api/v1/requests``)."""
    from ..services import approvals

    plan = approvals.plan_from_json(found.plan)
    target = get_catalog().get(found.target)
    return {
        "id": found.id, "target": found.target, "command": found.command,
        "revision": found.revision, "status": found.status,
        "requester": found.requester.username if found.requester else None,
        "reason": found.reason, "plan_hash": found.plan_hash,
        "from": plan.current, "to": plan.heads_after,
        "steps": [{"revision": s.revision, "direction": s.direction, "sha256": s.sha256}
                  for s in plan.steps],
        "warnings": plan.warnings,
        "approvals": [{"approver": a.approver.username if a.approver else None,
                       "decision": a.decision, "comment": a.comment, "void": a.void,
                       "at": a.created_at.isoformat(timespec="seconds") + "Z"}
                      for a in found.approvals],
        "required": target.policy.approvals_required if target else None,
        "created_at": found.created_at.isoformat(timespec="seconds") + "Z",
        "expires_at": found.expires_at.isoformat(timespec="seconds") + "Z",
        "job": found.job_id, "note": found.note,
    }


@bp.route("/requests")
def requests_list():
    """Open (and approved, not yet run) requests, newest first; ``?all=1`` for all."""
    from flask import request
    from flask_login import current_user

    from ..services import accounts, approvals

    catalog = get_catalog()
    visible = [t.name for t in accounts.visible_targets(current_user, catalog.targets.values())]
    rows = approvals.list_requests(open_only=request.args.get("all") != "1", targets=visible)
    return jsonify([request_json(r) for r in rows])


@bp.route("/requests/<int:request_id>/<any(approve, reject):decision>", methods=["POST"])
def request_decide(request_id: int, decision: str):
    """Approve or reject with JSON ``{"comment": "..."}``: same rules as the UI
    (approver role, never the requester). Approving the last needed approval
    on a ``run_on_approval`` target starts the job: ``{"job": id}``."""
    from flask import request
    from flask_login import current_user

    from ..services import approvals, audit

    payload = request.get_json(silent=True)
    comment = payload.get("comment", "") if isinstance(payload, dict) else ""
    try:
        if not isinstance(comment, str):
            raise Refused(Reason.BAD_INPUT, 'send JSON {"comment": "..."}')
        found, job = approvals.decide(get_catalog(), request_id, current_user, decision,
                                      comment, _api_actor())
    except Refused as exc:
        audit.record(_api_actor(), "request.decide", "denied", request=request_id,
                     reason=exc.reason, message=str(exc), via="api")
        return jsonify({"error": exc.reason, "detail": str(exc)}), http_status(exc)
    body = {"request": found.id, "status": found.status}
    if job is not None:
        body["job"] = job.id
    if found.note:  # e.g. why an approved request did not start (its requester may not run it)
        body["note"] = found.note
    return jsonify(body)


from . import rollouts as _rollouts  # noqa: E402,F401  (registers /api/v1/rollouts)
