"""Fleet rollout pages: the list and start form, one rollout's live page,
pause / resume / proceed / cancel (POST + CSRF). A view records the ends of
steps but never starts one."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user

from ..core.rollouts import Selection
from ..core.targets import TIERS
from ..models import STEP_IN_FLIGHT
from ..services import audit, rollouts
from ..services.catalog import get_catalog
from ..services.refusals import Reason, Refused
from .jobs import actor
from .refusals import http_status

bp = Blueprint("rollouts", __name__)

MAX_FIELD = 200
MAX_NAMES = 1000


def _names(value, key: str) -> tuple[str, ...]:
    """A string or a list of strings → tuple (blank entries dropped).

    :raises Refused: bad input (other types, overlong, too many)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > MAX_NAMES or not all(
            isinstance(v, str) and len(v) <= MAX_FIELD for v in value):
        raise Refused(Reason.BAD_INPUT, f"{key} must be a string or a list of strings")
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def _integer(value, key: str, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
        value = int(value)
    if type(value) is not int:
        raise Refused(Reason.BAD_INPUT, f"{key} must be a whole number")
    return value


def parse_spec(data: Mapping) -> rollouts.RolloutSpec:
    """A :class:`~webapp.services.rollouts.RolloutSpec` from the API's JSON
    body (or the form, converted to the same keys): ``command``,
    ``revision``, ``tier`` / ``tag`` / ``targets`` (a string or a list),
    ``batch_size``, ``concurrency``, ``stop_on_failure``, ``reason``, ``paused``.

    :raises Refused: bad input (400).
    """
    if not isinstance(data, Mapping):
        raise Refused(Reason.BAD_INPUT, 'send JSON {"command", "revision", "tier" | "tag" | '
                                        '"targets", "batch_size", "concurrency"}')
    command, revision = data.get("command"), data.get("revision")
    if not isinstance(command, str) or not isinstance(revision, str) \
            or len(command) > 32 or len(revision) > MAX_FIELD:
        raise Refused(Reason.BAD_INPUT, "command and revision must be strings, as for a job")
    reason = data.get("reason", "")
    flags = {key: data.get(key, default) for key, default in
             (("stop_on_failure", True), ("paused", False))}
    if not isinstance(reason, str) or not all(type(v) is bool for v in flags.values()):
        raise Refused(Reason.BAD_INPUT, "reason must be a string; stop_on_failure and paused "
                                        "true or false")
    return rollouts.RolloutSpec(
        command=command.strip(), revision=revision.strip(),
        selection=Selection(tiers=_names(data.get("tier"), "tier"),
                            tags=_names(data.get("tag"), "tag"),
                            names=_names(data.get("targets"), "targets")),
        batch_size=_integer(data.get("batch_size"), "batch_size", None),
        concurrency=_integer(data.get("concurrency"), "concurrency", 1),
        reason=reason, **flags)


def _form_data(form) -> dict:
    """The start form's fields in the API's keys."""
    return {"command": form.get("command", ""), "revision": form.get("revision", ""),
            "tier": form.getlist("tier"), "targets": form.getlist("targets"),
            "tag": form.get("tag", "").replace(",", " ").split(),
            "batch_size": form.get("batch_size", ""),
            "concurrency": form.get("concurrency", ""), "reason": form.get("reason", ""),
            "stop_on_failure": form.get("stop_on_failure") == "on",
            "paused": form.get("paused") == "on"}


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


@bp.route("/rollouts", methods=["POST"])
def create():
    """Start a rollout from the form (POST + CSRF)."""
    try:
        spec = parse_spec(_form_data(request.form))
        rollout = rollouts.create(get_catalog(), current_user, spec, actor())
    except Refused as exc:
        audit.record(actor(), "rollout.create", "denied", reason=exc.reason, message=str(exc))
        return _index(exc, request.form)
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
def control(rollout_id: int, action: str):
    """Pause, resume, proceed (start next steps) or cancel (operator role; POST + CSRF)."""
    change = {"pause": rollouts.pause, "resume": rollouts.resume,
              "proceed": rollouts.proceed, "cancel": rollouts.cancel}
    try:
        change[action](get_catalog(), rollout_id, current_user, actor())
    except Refused as exc:
        audit.record(actor(), f"rollout.{action}", "denied", rollout=rollout_id,
                     reason=exc.reason, message=str(exc))
        abort(http_status(exc), description=str(exc))
    return redirect(url_for("rollouts.show", rollout_id=rollout_id), code=303)
