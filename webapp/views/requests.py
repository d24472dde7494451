"""Approval requests: ask, list, review (approve / reject), withdraw, run."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..models import REQUEST_PENDING
from ..services import accounts, approvals, inbox, submission
from ..services.catalog import get_catalog
from ..services.refusals import Refused
from .common import (
    actor,
    answer_refusal,
    audits_refusals,
    hidden_from_user,
    http_status,
    job_refusal_page,
    job_request,
    job_request_details,
)
from .schemas import DecisionBody
from .targets import PYGMENTS_CSS, sql_sections_html

bp = Blueprint("requests", __name__)


def _decision_details(exc: Refused) -> dict:
    """Audit details of a refused decision, withdrawal or run: the request
    (from the URL) and its target."""
    request_id = request.view_args["request_id"]
    found = approvals.get_request(request_id)
    return {"target": found.target if found else None, "request": request_id}


def _decision_refusal_page(exc: Refused):
    """The refusal page of an action on a request, with a way back to it."""
    code = http_status(exc)
    return render_template("jobs/refused.html", target=None, error=exc, running=None,
                           code=code, back=url_for("requests.show",
                                                   request_id=request.view_args["request_id"])
                           ), code


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the refusal page
    with a way back to the request (or the view's own answer)."""
    return answer_refusal(exc, default=_decision_refusal_page)


@bp.route("/targets/<name>/requests", methods=["POST"])
@audits_refusals("job.request", job_request_details, answer=job_refusal_page)
def create(name: str):
    """Turn the confirmed plan into a request (protected targets; POST + CSRF).
    A refusal is one of the job request (the plan page's form), answered so."""
    req, body = job_request(name, request.form)
    created = submission.submit(get_catalog(), current_user, req, actor(),
                                confirmed_hash=body.plan_hash, reason=body.reason,
                                asks_for="request").request
    flash(f"Request {created.id} created: an approver must approve it before it runs.", "info")
    return redirect(url_for("requests.show", request_id=created.id), code=303)


@bp.route("/requests")
def index():
    """Open requests first, then recent decided ones."""
    visible = [t.name for t in accounts.visible_targets(current_user,
                                                         get_catalog().targets.values())]
    return render_template("requests/index.html",
                           open_requests=approvals.list_requests(open_only=True,
                                                                 targets=visible),
                           recent=[r for r in approvals.list_requests(limit=50, targets=visible)
                                   if r.status not in REQUEST_PENDING])


def _request_or_404(request_id: int):
    found = approvals.get_request(request_id)
    if found is None or hidden_from_user(get_catalog().get(found.target)):
        abort(404, description=f"There is no request {request_id}.")
    return found


@bp.route("/requests/<int:request_id>")
def show(request_id: int):
    """A request: its plan as approved, the decisions, and the actions this user may take."""
    found = _request_or_404(request_id)
    plan = approvals.plan_from_json(found.plan)
    target = get_catalog().get(found.target)
    required = target.policy.approvals_required if target else 1
    from ..services import rehearsals

    return render_template(
        "requests/show.html", req=found, plan=plan, target=target, required=required,
        rehearsal=rehearsals.latest_for(found.target, found.plan_hash),
        approved=len({a.approver_id for a in approvals.approvals_for_current_plan(found)}),
        sections=sql_sections_html(plan.sql, plan.findings), pygments_css=PYGMENTS_CSS,
        can_decide=inbox.may_decide(get_catalog(), found, current_user),
        approvers=inbox.eligible_approvers(get_catalog(), found),
        is_requester=found.requester_id == current_user.id)


@bp.route("/requests/<int:request_id>/<any(approve, reject):decision>", methods=["POST"])
@audits_refusals("request.decide", _decision_details)
def decide(request_id: int, decision: str):
    """Approve or reject (approver role, not the requester; POST + CSRF)."""
    body = DecisionBody.load(DecisionBody.from_form(request.form))
    found, job = approvals.decide(get_catalog(), request_id, current_user, decision,
                                  body.comment, actor())
    if job is not None:
        return redirect(url_for("jobs.show", job_id=job.id), code=303)
    flash(f"Request {found.id} is {found.status}.", "info")
    return redirect(url_for("requests.show", request_id=request_id), code=303)


@bp.route("/requests/<int:request_id>/withdraw", methods=["POST"])
@audits_refusals("request.decide", _decision_details)
def withdraw(request_id: int):
    """The requester takes the request back."""
    approvals.withdraw(request_id, current_user, actor())
    flash(f"Request {request_id} withdrawn.", "info")
    return redirect(url_for("requests.show", request_id=request_id), code=303)


@bp.route("/requests/<int:request_id>/run", methods=["POST"])
@audits_refusals("request.decide", _decision_details)
def run(request_id: int):
    """The requester starts an approved request (policy run_on_approval = false)."""
    found = _request_or_404(request_id)
    job = approvals.run_approved_by(get_catalog(), found, current_user, actor())
    return redirect(url_for("jobs.show", job_id=job.id), code=303)
