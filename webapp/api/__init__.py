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
from ..views.common import (
    actor,
    audits_refusals,
    job_request_details,
    refusal_json,
    url_details,
)
from ..views.schemas import DECISION_OF_URL, DecisionBody, JobBody

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)
bp.register_error_handler(Refused, refusal_json)  # audited once, {"error", "detail"}


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


# the audit action of a bad body where the view declares none (its refusals are not audited)
_UNAUDITED = "api.request"


def _bad_body(detail: str):
    """A 400 ``{"error": "bad_input", "detail"}``, audited under the view's
    own refusal action (the body itself is not recorded)."""
    from flask import request

    from ..services import audit
    from ..views.common import refusal_policy

    policy = refusal_policy()
    action = policy.action.format(**(request.view_args or {})) if policy else _UNAUDITED
    audit.record(actor(), action, "denied", reason=Reason.BAD_INPUT, message=detail,
                 via="api", path=request.path[:200])
    return jsonify(error=Reason.BAD_INPUT, detail=detail), 400


@bp.route("/targets")
def targets():
    """``[{"name", "tier", "current", "heads", "pending", "reachable"}]`` for every target.

    Extra fields: ``label``, ``error`` (why unreachable; no password),
    ``branches``: one ``{"label", "head", "heads", "current", "pending"}`` per
    branch label (``head`` null when the branch has several heads,
    ``current`` the newest applied revisions of the branch, ``pending`` what
    ``upgrade <label>@head`` would apply; both null when unknown),
    ``no_revisions`` (why nothing is pending when the script directory has
    no revision: "no revisions found in <locations>...", else null). Only
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
            "branches": [branch.as_json() for branch in status.branches],
            "no_revisions": status.no_revisions,
        })
    return jsonify(result)


@bp.route("/targets/<name>/history")
def history(name: str):
    """Revisions newest first: ``revision``, ``down_revision`` (list), ``message``,
    ``is_head``, ``is_branch_point``, ``is_merge_point``, ``applied`` (bool, or
    null when the database is unreachable), plus ``branch_labels``,
    ``depends_on``, ``create_date``, ``has_downgrade`` (False: the file has no
    ``downgrade()`` function, read from its source), ``branches`` (the branch
    labels the revision is on, inherited along its branch as Alembic does;
    ``branch_labels`` are only those its file declares)."""
    catalog = get_catalog()
    target = catalog.get(name)
    if target is None or hidden_from_caller(target):
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
        "branches": list(info.branches),
    } for info in status.history.revisions])


def hidden_from_caller(target) -> bool:
    """True (audited) when the caller may not see ``target`` (below viewer
    there): the API then answers as for a name (or a job) that does not exist,
    so the answer never tells which target names exist."""
    from flask import request
    from flask_login import current_user

    from ..services import accounts

    return accounts.hidden_from(current_user, target, actor(), path=request.path[:200],
                                via="api")


def job_json(job) -> dict:
    """A job in the fixed shape of ``GET /api/v1/jobs/<id>`` (plus extras)."""
    from ..models import Job
    from ..services.jobs import failure_report

    def iso(value):
        return value.isoformat(timespec="seconds") + "Z" if value else None

    return {
        "id": job.id, "target": job.target, "command": job.command, "revision": job.revision,
        "status": job.status, "from": Job.split(job.current_before),
        "to": Job.split(job.current_after) if job.current_after is not None else None,
        "log": job.log, "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "created_at": iso(job.created_at), "applied": Job.split(job.applied_revisions),
        "failed_revision": job.failed_revision, "error": job.error,
        "report": failure_report(job), "user": job.user.username if job.user else None,
        **blocked_by_json(job), **resume_json(job),
    }


def resume_json(job) -> dict:
    """``{"resume_of": failed job id, "skipped": [positions]}`` for a job that
    resumed a failed job's half-applied revision, ``{"compensate_of": id,
    "undone": [SQL]}`` for a compensation; ``{}`` for any other job."""
    recovery = job.recovery_order
    if not recovery:
        return {}
    if recovery.get("kind") == "compensate":
        return {"compensate_of": recovery["job"], "undone": recovery.get("statements", [])}
    return {"resume_of": recovery["job"],
            "skipped": [d["position"] for d in recovery.get("done", [])]}


def blocked_by_json(job) -> dict:
    """``{"blocked_by": [{"pid", "user", "state", "since", "query"}]}`` when
    the job's migration waited on (or failed on) a lock: the sessions
    blocking it now while it runs, those it last waited on after the end;
    ``{}`` when it never waited."""
    blockers = job.blockers
    if blockers is None:
        return {}
    return {"blocked_by": [{key: b.get(key) for key in ("pid", "user", "state", "since", "query")}
                           for b in blockers]}


def job_request_of_body(name: str, schema: type[JobBody] = JobBody):
    """The :class:`~webapp.services.jobs.JobRequest` of the JSON body
    (:class:`~webapp.views.schemas.JobBody`, or its subclass ``schema``) on
    the target ``name``, and the body.

    :raises Refused: unknown target or one the caller may not see (404, the same
        answer), malformed body or overlong fields (400).
    """
    from flask import request

    target = get_catalog().get(name)
    if target is None or hidden_from_caller(target):
        raise Refused(Reason.NOT_FOUND, f"no target called {name[:80]!r}")
    body = schema.load(request.get_json(silent=True))
    return body.job_request(target), body


@bp.route("/targets/<name>/jobs", methods=["POST"])
@audits_refusals("job.request", job_request_details)
def create_job(name: str):
    """Plan and start ``{"command", "revision"}`` on a target
    (``"drop_invalid_indexes": true``: drop its INVALID indexes first, as
    part of the plan).

    202 ``{"job": id, "status"}``; 200 ``{"status": "up_to_date", "detail"}``
    when the database is already there (the most common success of a
    pipeline, so not an error; a script directory without any revision is
    409 ``nothing_to_do`` saying why); 409 ``{"error": "busy", "job": id}`` when a
    job runs; 403 for role/policy; 400/404 for bad input; every refusal is
    audited.
    """
    from flask_login import current_user

    from ..services import submission

    job_request, body = job_request_of_body(name)
    try:
        submitted = submission.submit(get_catalog(), current_user, job_request, actor(),
                                      reason=body.reason or "requested through the API",
                                      fast_plan=True)
    except Refused as exc:
        # a script directory with no revision at all is not "up to date" but a
        # misconfiguration: that stays a 409 naming why
        if exc.reason != Reason.NOTHING_TO_DO or get_catalog().no_revisions(job_request.target):
            raise
        return jsonify({"status": "up_to_date", "detail": str(exc)}), 200
    if submitted.request is not None:
        return jsonify({"request": submitted.request.id,
                        "status": submitted.request.status}), 202
    return jsonify({"job": submitted.job.id, "status": submitted.job.status}), 202


@bp.route("/targets/<name>/rehearsals", methods=["POST"])
@audits_refusals("rehearsal", url_details(target="name"))
def create_rehearsal(name: str):
    """Rehearse ``{"command", "revision"}`` on a scratch copy of the target's
    schema (synchronous; the real database is only read).

    201 ``{"rehearsal": id, "passed", "plan_hash", "steps": [{"revision",
    "seconds"}], "seconds", "failed_revision", "failing_statement", "error",
    "copy", "started_at", "observed_locks"}`` (PostgreSQL: the locks each
    statement took; MySQL/MariaDB: the ``ALGORITHM=..., LOCK=...`` clause each
    ALTER was accepted with; see the README's forecast section); refusals as for jobs
    (403, 400/404, 409, 422, 503).
    """
    from flask_login import current_user

    from ..services import rehearsals

    row = rehearsals.rehearse(get_catalog(), current_user, job_request_of_body(name)[0], actor())
    return jsonify({"rehearsal": row.id, "passed": row.passed, "plan_hash": row.plan_hash,
                    **row.details}), 201


@bp.route("/jobs/<int:job_id>")
def job(job_id: int):
    """``{"id", "target", "command", "revision", "status", "from", "to", "log",
    "started_at", "finished_at"}`` (UTC ISO 8601) plus ``applied``,
    ``failed_revision``, ``error``, ``report``; for a failed or abandoned job
    also ``recovery`` (:func:`webapp.services.recovery.guidance`: what is
    applied, what is not, ``recommended`` and ``alternatives``)."""
    from ..services import jobs, recovery

    catalog = get_catalog()
    found = jobs.get_job(job_id)
    target = catalog.get(found.target) if found is not None else None
    if found is None or hidden_from_caller(target):
        abort(404, description=f"no job {job_id}")
    guide = recovery.guidance(found, recovery.journal_report(found, catalog, target))
    return jsonify({**job_json(found), **({"recovery": guide} if guide else {})})


@bp.route("/jobs/<int:job_id>/cancel", methods=["POST"])
@audits_refusals("job.cancel", url_details(job_id="job_id"))
def job_cancel(job_id: int):
    """Cancel a job still waiting for a queue worker: the job's JSON, or
    ``{"error", "detail"}`` with 403/404/409."""
    from flask_login import current_user

    from ..services import jobs

    return jsonify(job_json(jobs.cancel_queued(job_id, current_user, actor())))


def request_json(found) -> dict:
    """An approval request as JSON (``GET /api/v1/requests``): ``status`` is
    open, approved, changes_requested, executed, rejected, withdrawn or
    expired; ``approvals`` every decision (``decision`` approve | changes |
    reject); ``thread`` the comments, decisions and system notes, oldest first."""
    from ..services import approvals

    plan = approvals.plan_from_json(found.plan)
    target = get_catalog().get(found.target)
    return {
        "id": found.id, "target": found.target, "command": found.command,
        "revision": found.revision, "status": found.status,
        "requester": found.requester.username if found.requester else None,
        "reason": found.reason, "plan_hash": found.plan_hash,
        "from": plan.current_before, "to": plan.current_after,
        "steps": [{"revision": s.revision, "direction": s.direction, "sha256": s.sha256}
                  for s in plan.steps],
        "warnings": plan.warnings,
        "approvals": [{"approver": a.approver.username if a.approver else None,
                       "decision": a.decision, "comment": a.comment, "void": a.void,
                       "without_viewing": a.without_viewing,
                       "at": a.created_at.isoformat(timespec="seconds") + "Z"}
                      for a in found.approvals],
        "thread": [{"author": c.author.username if c.author else None, "kind": c.kind,
                    "body": c.body, "plan_hash": c.plan_hash,
                    "at": c.created_at.isoformat(timespec="seconds") + "Z"}
                   for c in found.comments],
        "required": target.policy.approvals_required if target else None,
        "created_at": found.created_at.isoformat(timespec="seconds") + "Z",
        "expires_at": found.expires_at.isoformat(timespec="seconds") + "Z",
        "job": found.job_id, "note": found.note,
    }


@bp.route("/requests")
def requests_list():
    """Open (and approved, not yet run) requests, newest first; ``?all=1`` for
    all; ``?awaiting=me`` for the open ones waiting for the caller's decision
    (:func:`webapp.services.inbox.awaiting`)."""
    from flask import request
    from flask_login import current_user

    from ..services import accounts, approvals, inbox

    catalog = get_catalog()
    awaiting = request.args.get("awaiting")
    if awaiting is not None:
        if awaiting != "me":
            raise Refused(Reason.BAD_INPUT, "awaiting must be me")
        return jsonify([request_json(r) for r in inbox.awaiting(catalog, current_user)])
    visible = [t.name for t in accounts.visible_targets(current_user, catalog.targets.values())]
    rows = approvals.list_requests(open_only=request.args.get("all") != "1", targets=visible)
    return jsonify([request_json(r) for r in rows])


@bp.route("/requests/<int:request_id>/<any(approve, reject, \"request-changes\"):decision>",
          methods=["POST"])
@audits_refusals("request.decide", url_details(request="request_id"))
def request_decide(request_id: int, decision: str):
    """Approve, request changes or reject with JSON ``{"comment": "...",
    "without_viewing": true | false}``: same rules as the UI (approver role,
    never the requester; rejecting and requesting changes need a
    ``comment``, else 400). An approval whose approver did not tick every
    revision as viewed in the browser counts as approved without viewing
    (recorded); ``"without_viewing": false`` refuses it instead (409
    ``not_reviewed``). Approving the last needed approval on a
    ``run_on_approval`` target starts the job: ``{"job": id}``."""
    from flask import request
    from flask_login import current_user

    from ..services import approvals

    body = DecisionBody.load(request.get_json(silent=True) or {})  # no body: no comment
    found, job = approvals.decide(get_catalog(), request_id, current_user,
                                  DECISION_OF_URL[decision], body.comment, actor(),
                                  without_viewing=body.without_viewing is not False)
    body = {"request": found.id, "status": found.status}
    if job is not None:
        body["job"] = job.id
    if found.note:  # e.g. why an approved request did not start (its requester may not run it)
        body["note"] = found.note
    return jsonify(body)


from . import blocking as _blocking  # noqa: E402,F401  (registers /api/v1/jobs/<id>/blockers)
from . import changes as _changes  # noqa: E402,F401  (changelog, drift, schema-diff)
from . import plans as _plans  # noqa: E402,F401  (registers /api/v1/targets/<name>/plan)
from . import reviews as _reviews  # noqa: E402,F401  (registers /api/v1/requests/<id>/...)
from . import rollouts as _rollouts  # noqa: E402,F401  (registers /api/v1/rollouts)
