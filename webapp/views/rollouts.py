"""Fleet rollout pages: the list and start form, one rollout's live page,
pause / resume / proceed / cancel (POST + CSRF). A view records the ends of
steps but never starts one."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user

from ..core.targets import TIERS
from ..models import STEP_IN_FLIGHT
from ..services import rollouts
from ..services.catalog import get_catalog
from ..services.refusals import Refused
from .common import actor, answer_refusal, audits_refusals, http_status, url_details
from .schemas import RolloutBody

bp = Blueprint("rollouts", __name__)


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the error page
    (or the view's own answer)."""
    return answer_refusal(exc)


def _index(error: Refused | None = None, form=None):
    catalog = get_catalog()
    tags = sorted({tag for t in catalog.targets.values() for tag in t.tags})
    page = render_template("rollouts/index.html",
                           rollouts=[r for r in rollouts.recent()
                                     if rollouts.visible_to(catalog, current_user, r)],
                           targets=list(catalog.targets.values()), tiers=TIERS, tags=tags,
                           error=error, form=form or {})
    return page, http_status(error) if error else 200


@bp.route("/rollouts")
def index():
    """Recent rollouts and the form to start one (operators)."""
    return _index()


def _refused_form(exc: Refused):
    # the start form is shown again, filled in as sent, with the refusal above
    # it: a rollout names many fields and retyping them all would be a chore
    return _index(exc, request.form)


@bp.route("/rollouts", methods=["POST"])
@audits_refusals("rollout.create", answer=_refused_form)
def create():
    """Start a rollout from the form (POST + CSRF)."""
    spec = RolloutBody.load(RolloutBody.from_form(request.form)).to_spec()
    rollout = rollouts.create(get_catalog(), current_user, spec, actor())
    return redirect(url_for("rollouts.show", rollout_id=rollout.id), code=303)


def _rollout_or_404(rollout_id: int):
    found = rollouts.get(get_catalog(), rollout_id)
    if found is None:
        abort(404, description=f"There is no rollout {rollout_id}.")
    if not rollouts.visible_to(get_catalog(), current_user, found):
        abort(403, description=f"Rollout {rollout_id} includes targets you have no role on.")
    return found


def _live(rollout) -> bool:
    """True while the rollout may still change (a cancelled one's running jobs too)."""
    return rollout.is_active or any(s.status in STEP_IN_FLIGHT for s in rollout.steps)


def _ready(rollout) -> bool:
    """True when a running rollout has pending steps and free slots: steps
    that normally start when a job ends, offered as "Start next steps"."""
    pending = [s for s in rollout.steps if s.status == "pending"]
    in_flight = [s for s in rollout.steps if s.status in STEP_IN_FLIGHT]
    return rollout.status == "running" and bool(pending) \
        and len(in_flight) < rollout.concurrency


def _context(rollout) -> dict:
    return {"rollout": rollout, "counts": rollouts.counts(rollout), "live": _live(rollout),
            "ready": _ready(rollout),
            "selection": rollouts.selection_of(rollout),
            "waves": sorted({s.wave for s in rollout.steps})}


@bp.route("/rollouts/<int:rollout_id>")
def show(rollout_id: int):
    """A rollout: every target's state, live while it runs."""
    return render_template("rollouts/show.html", **_context(_rollout_or_404(rollout_id)))


@bp.route("/rollouts/<int:rollout_id>/status")
def status(rollout_id: int):
    """Fragment polled by the rollout page; 286 (stop polling) once it ended."""
    rollout = _rollout_or_404(rollout_id)
    html = render_template("rollouts/_status.html", **_context(rollout))
    code = 200 if _live(rollout) or request.headers.get("HX-Request") != "true" else 286
    return html, code, {"Vary": "HX-Request", "Cache-Control": "no-store"}


@bp.route("/rollouts/<int:rollout_id>/<any(pause, resume, proceed, cancel):action>",
          methods=["POST"])
@audits_refusals("rollout.{action}", url_details(rollout="rollout_id"))
def control(rollout_id: int, action: str):
    """Pause, resume, proceed (start next steps) or cancel (operator role; POST + CSRF)."""
    rollouts.CONTROLS[action](get_catalog(), rollout_id, current_user, actor())
    return redirect(url_for("rollouts.show", rollout_id=rollout_id), code=303)
