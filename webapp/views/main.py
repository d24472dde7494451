"""Dashboard (one card per target) and the health check."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user

from ..services import accounts, jobs
from ..services.catalog import get_catalog
from .common import awaiting_me, get_target_or_404

bp = Blueprint("main", __name__)


@bp.route("/healthz")
def healthz():
    """Liveness for load balancers: no auth, no details."""
    return {"status": "ok"}


@bp.app_context_processor
def inbox_helpers() -> dict:
    """``inbox_count()`` for every page's navigation: how many requests
    await the logged-in user's decision (:func:`.common.awaiting_me`)."""
    return {"inbox_count": lambda: len(awaiting_me())}


@bp.route("/")
def index():
    """The dashboard. Cards load their status separately (htmx), so one
    unreachable database does not delay the others."""
    catalog = get_catalog()
    return render_template("main/index.html",
                           targets=accounts.visible_targets(current_user,
                                                            catalog.targets.values()),
                           catalog=catalog, awaiting=awaiting_me())


@bp.route("/targets/<name>/card")
def card(name: str):
    """One target's card (fragment): tier, current, heads, pending, errors, the
    running job (the card then polls itself) and a failed last job."""
    target = get_target_or_404(name)
    status = get_catalog().status(target)
    last = jobs.recent_jobs(target.name, limit=1)
    last_job = last[0] if last else None
    running = last_job if last_job is not None and last_job.is_active else None
    waiting = [r for r in awaiting_me() if r.target == target.name]
    return render_template("main/_card.html", target=target, status=status,
                           last_job=last_job, running=running,
                           awaiting=waiting), 200, {"Vary": "HX-Request"}
