"""``/api/v1/rollouts``: fleet rollouts for pipelines (same rules as the pages)."""

from __future__ import annotations

from flask import abort, jsonify, request
from flask_login import current_user

from ..models import STEP_IN_FLIGHT, StepStatus
from ..services import rollouts
from ..services.catalog import get_catalog
from ..views.common import actor, audits_refusals, url_details
from ..views.schemas import RolloutBody
from . import bp


def _iso(value) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def rollout_json(rollout) -> dict:
    """``{"id", "command", "revision", "status", "concurrency", "batch_size",
    "stop_on_failure", "selection", "reason", "user", "created_at",
    "finished_at", "note", "counts": {state: n}, "waves": n, "current_wave",
    "steps": [{"target", "wave", "status", "job", "job_status", "request",
    "request_status", "note", "started_at", "finished_at"}]}`` (UTC ISO 8601)."""
    open_waves = [s.wave for s in rollout.steps
                  if s.status == StepStatus.PENDING or s.status in STEP_IN_FLIGHT]
    return {
        "id": rollout.id, "command": rollout.command, "revision": rollout.revision,
        "status": rollout.status, "concurrency": rollout.concurrency,
        "batch_size": rollout.batch_size, "stop_on_failure": rollout.stop_on_failure,
        "selection": rollouts.selection_of(rollout), "reason": rollout.reason,
        "user": rollout.user.username if rollout.user else None,
        "created_at": _iso(rollout.created_at), "finished_at": _iso(rollout.finished_at),
        "note": rollout.note, "counts": rollouts.counts(rollout),
        "waves": max((s.wave for s in rollout.steps), default=0),
        "current_wave": min(open_waves) if open_waves and rollout.is_active else None,
        "steps": [{"target": s.target, "wave": s.wave, "status": s.status, "job": s.job_id,
                   "job_status": s.job.status if s.job else None, "request": s.request_id,
                   "request_status": s.request.status if s.request else None,
                   "note": s.note, "started_at": _iso(s.started_at),
                   "finished_at": _iso(s.finished_at)} for s in rollout.steps],
    }


@bp.route("/rollouts", methods=["POST"])
@audits_refusals("rollout.create")
def rollout_create():
    """Start a rollout: JSON ``{"command", "revision", "tier" | "tag" |
    "targets", "batch_size", "concurrency", "stop_on_failure", "reason",
    "paused"}`` → 202 with the rollout's JSON; 400/403/404/409 refusals."""
    spec = RolloutBody.load(request.get_json(silent=True)).to_spec()
    found = rollouts.create(get_catalog(), current_user, spec, actor())
    return jsonify(rollout_json(found)), 202


@bp.route("/rollouts")
def rollout_list():
    """The 50 newest rollouts, without their steps' details."""
    catalog = get_catalog()
    return jsonify([{k: v for k, v in rollout_json(r).items() if k != "steps"}
                    for r in rollouts.recent() if rollouts.visible_to(catalog, current_user, r)])


@bp.route("/rollouts/<int:rollout_id>")
def rollout_show(rollout_id: int):
    """One rollout (the ends of its steps recorded first; a GET starts no step)."""
    found = rollouts.get(get_catalog(), rollout_id)
    if found is None:
        abort(404, description=f"no rollout {rollout_id}")
    if not rollouts.visible_to(get_catalog(), current_user, found):
        return jsonify(error="role", detail="This rollout includes targets you have no "
                       "role on."), 403
    return jsonify(rollout_json(found))


@bp.route("/rollouts/<int:rollout_id>/<any(pause, resume, proceed, cancel):action>",
          methods=["POST"])
@audits_refusals("rollout.{action}", url_details(rollout="rollout_id"))
def rollout_control(rollout_id: int, action: str):
    """Pause, resume, proceed (start next steps) or cancel: the rollout's JSON,
    or 403/404/409."""
    found = rollouts.CONTROLS[action](get_catalog(), rollout_id, current_user, actor())
    return jsonify(rollout_json(found))
