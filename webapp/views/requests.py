"""Approval requests: ask, list, review (viewed ticks, thread) and decide
(approve / request changes / reject), submit a new plan, withdraw, run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..core.permissions import Role
from ..models import REQUEST_PENDING
from ..services import accounts, approvals, inbox, review, submission
from ..services.catalog import get_catalog
from ..services.new_plan import submit_new_plan
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
from .schemas import DECISION_OF_URL, CommentBody, DecisionBody, ViewedBody
from .targets import PYGMENTS_CSS, revision_source_html, sql_sections_html

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


def _file_changed(step) -> bool:
    """True when the revision file of ``step`` differs now from the plan's
    checksum (or is gone): the requester should submit a new plan."""
    if not step.path or not step.sha256:
        return False
    try:
        return hashlib.sha256(Path(step.path).read_bytes()).hexdigest() != step.sha256
    except OSError:
        return True


def review_items(found, plan, sections: list[dict]) -> list[dict]:
    """One item per plan step, in plan order: ``{"step", "section" (its SQL
    section or None), "source" (highlighted source or None), "viewed",
    "changed" (file differs on disk from the plan)}``."""
    by_revision = {sec["revision"]: sec for sec in sections if sec["revision"]}
    viewed = review.viewed_revisions(found, plan, current_user)
    return [{"step": step, "section": by_revision.get(step.revision),
             "source": revision_source_html(Path(step.path)) if step.path else None,
             "viewed": step.revision in viewed, "changed": _file_changed(step)}
            for step in plan.steps]


@bp.route("/requests/<int:request_id>")
def show(request_id: int):
    """A request: its revisions and their SQL to review first (with the
    user's *Viewed* ticks), then the checks summary and the decision, the
    thread, and what the requester does next."""
    found = _request_or_404(request_id)
    plan = approvals.plan_from_json(found.plan)
    catalog = get_catalog()
    target = catalog.get(found.target)
    required = target.policy.approvals_required if target else 1
    from ..services import rehearsals

    rehearsal = rehearsals.latest_for(found.target, found.plan_hash)
    sections = sql_sections_html(plan.sql, plan.findings)
    items = review_items(found, plan, sections)
    return render_template(
        "requests/show.html", req=found, plan=plan, target=target, required=required,
        rehearsal=rehearsal, items=items,
        preamble=[sec for sec in sections if not sec["revision"]],
        checks=review.checks_summary(catalog, found, plan, rehearsal),
        approved=len({a.approver_id for a in approvals.approvals_for_current_plan(found)}),
        pygments_css=PYGMENTS_CSS, next_step=review.next_step(found),
        all_viewed=all(i["viewed"] for i in items),
        can_decide=inbox.may_decide(catalog, found, current_user),
        can_comment=found.requester_id == current_user.id
        or accounts.access_on(current_user, target).allows(Role.OPERATOR),
        approvers=inbox.eligible_approvers(catalog, found),
        is_requester=found.requester_id == current_user.id)


@bp.route("/requests/<int:request_id>/<any(approve, reject, \"request-changes\"):decision>",
          methods=["POST"])
@audits_refusals("request.decide", _decision_details)
def decide(request_id: int, decision: str):
    """Approve, request changes or reject (approver role, not the requester;
    POST + CSRF). Approving needs every revision ticked as viewed or the
    "approve without viewing" checkbox."""
    body = DecisionBody.load(DecisionBody.from_form(request.form))
    found, job = approvals.decide(get_catalog(), request_id, current_user,
                                  DECISION_OF_URL[decision], body.comment, actor(),
                                  without_viewing=bool(body.without_viewing))
    if job is not None:
        return redirect(url_for("jobs.show", job_id=job.id), code=303)
    flash(f"Request {found.id} is {found.status.replace('_', ' ')}.", "info")
    return redirect(url_for("requests.show", request_id=request_id), code=303)


@bp.route("/requests/<int:request_id>/viewed", methods=["POST"])
@audits_refusals("request.view", _decision_details)
def viewed(request_id: int):
    """Tick or untick a revision as viewed (POST + CSRF). An htmx request
    gets the tick's fragment (and the review progress, out of band); a plain
    form goes back to the revision on the page."""
    found = _request_or_404(request_id)
    body = ViewedBody.load(ViewedBody.from_form(request.form))
    plan = approvals.plan_from_json(found.plan)
    review.mark_viewed(get_catalog(), request_id, current_user, body.revision, body.viewed,
                       plan, actor())
    if request.headers.get("HX-Request") != "true":
        return redirect(url_for("requests.show", request_id=request_id,
                                _anchor=f"rev-{body.revision}"), code=303)
    viewed_now = review.viewed_revisions(found, plan, current_user)
    return render_template("requests/_viewed.html", req=found, revision=body.revision,
                           viewed=body.revision in viewed_now, oob=True,
                           viewed_count=len(viewed_now), total=len(plan.steps)), 200, \
        {"Vary": "HX-Request"}


@bp.route("/requests/<int:request_id>/comments", methods=["POST"])
@audits_refusals("request.comment", _decision_details)
def comment(request_id: int):
    """Add a comment to the request's thread (POST + CSRF)."""
    _request_or_404(request_id)
    body = CommentBody.load(CommentBody.from_form(request.form))
    review.comment(get_catalog(), request_id, current_user, body.comment, actor())
    return redirect(url_for("requests.show", request_id=request_id, _anchor="thread"),
                    code=303)


@bp.route("/requests/<int:request_id>/new-plan", methods=["POST"])
@audits_refusals("request.new_plan", _decision_details)
def new_plan(request_id: int):
    """The requester submits the plan again after changing the revision
    files (POST + CSRF): the request is open for review again."""
    _request_or_404(request_id)
    body = CommentBody.load(CommentBody.from_form(request.form))
    found = submit_new_plan(get_catalog(), request_id, current_user, body.comment, actor())
    flash(f"New plan submitted: request {found.id} is open for review again.", "info")
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
