"""``/api/v1/targets/<name>/changelog``, ``.../drift``, ``.../schema-diff``
and ``.../stairway``: what changed on a target, how its schema differs from
its models or from another target (viewer on every target named), and the
stairway test of its pending revisions (as for a rehearsal)."""

from __future__ import annotations

from flask import jsonify, request

from ..services import changelog, schema_compare
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from ..views.common import actor, audits_refusals, url_details
from ..views.schemas import StairwayBody
from . import bp, hidden_from_caller, job_request_of_body

CHANGELOG_LIMIT = 500  # entries at most per answer (``?limit=``, default 100)


def _visible_target(name: str):
    """The target ``name`` if the caller may see it.

    :raises Refused: (404) no such target, or one the caller may not see."""
    target = get_catalog().get(name)
    if target is None or hidden_from_caller(target):
        raise Refused(Reason.NOT_FOUND, f"no target called {name[:80]!r}")
    return target


def _int_arg(name: str, default: int | None, *, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Refused(Reason.BAD_INPUT, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


@bp.route("/targets/<name>/changelog")
def target_changelog(name: str):
    """Newest first: ``[{"revision", "direction": "upgrade"|"downgrade"|"stamp",
    "job", "request", "user", "at", "seconds", "schema_diff": [...]}]`` plus
    ``status`` ("succeeded"; "failed" for the revision a failed job left
    partly applied). ``schema_diff`` is the job's diff (the revisions of one
    job share it). ``?limit=`` (1-500, default 100), ``?before=<entry id>``
    pages on (``Link``-free: pass the last page's oldest ``id``)."""
    target = _visible_target(name)
    limit = _int_arg("limit", 100, low=1, high=CHANGELOG_LIMIT)
    before = _int_arg("before", None, low=1, high=2**31)
    rows = changelog.entries(target.name, limit=limit, before_id=before)
    return jsonify([dict(changelog.as_json(row), id=row.id) for row in rows])


@bp.route("/targets/<name>/drift")
def target_drift(name: str):
    """Models vs database: ``{"differences": [{"kind", "text", "destructive",
    "why"}], "current", "at_head"}`` — what autogenerate would change, also
    when the database is not at head (then the pending revisions' changes are
    among them). 409 ``{"error": "unreadable", "detail"}`` when env.py or the
    database cannot be read (or env.py has no ``target_metadata``)."""
    target = _visible_target(name)
    try:
        return jsonify(schema_compare.drift(get_catalog(), target))
    except schema_compare.CompareFailed as exc:
        return jsonify(error="unreadable", detail=str(exc)), 409


@bp.route("/targets/<name>/schema-diff")
def target_schema_diff(name: str):
    """``?against=<other target>``: ``{"differences": [{"kind", "object",
    "text", "before", "after"}], "dialects"}`` from this target's live schema
    to the other's (``before`` this one's value). 400 without ``against``;
    404 for a target the caller may not see; 409 when one cannot be read."""
    target = _visible_target(name)
    other_name = request.args.get("against", "")
    if not other_name:
        raise Refused(Reason.BAD_INPUT, "against must name the target to compare with")
    other = _visible_target(other_name)
    try:
        return jsonify(schema_compare.schema_diff(get_catalog(), target, other))
    except schema_compare.CompareFailed as exc:
        return jsonify(error="unreadable", detail=str(exc)), 409


@bp.route("/targets/<name>/stairway", methods=["POST"])
@audits_refusals("stairway", url_details(target="name"))
def create_stairway(name: str):
    """``{"command": "upgrade", "revision": "heads", "rows": N}``: on a scratch
    copy (the rehearsal's rules), upgrade, downgrade and upgrade again every
    revision the plan would apply, comparing schema snapshots and, with
    ``rows`` (optional, 0-10000; default the targets file's
    ``[targets.<name>.stairway] rows``), a sample of each table's rows
    (synchronous).

    201 ``{"stairway": id, "passed", "plan_hash", "revisions": [{"revision",
    "passed", "differences": [texts], "error", "seconds"}], "seconds",
    "error", "copy", "started_at", "rows", "sampled_rows": {table: n}}``;
    refusals as for rehearsals (a command other than upgrade, a bad
    ``rows``: 400)."""
    from flask_login import current_user

    from ..services import rehearsals

    job_request, body = job_request_of_body(name, StairwayBody)
    row = rehearsals.rehearse(get_catalog(), current_user, job_request, actor(),
                              kind="stairway", rows=body.rows)
    return jsonify({"stairway": row.id, "passed": row.passed, "plan_hash": row.plan_hash,
                    **row.details}), 201
