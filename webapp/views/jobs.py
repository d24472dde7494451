"""Plan → confirm → job pages, with live output.

The plan page shows exactly what will run; the confirmation form carries the
plan's hash, and the run is refused if the plan changed in between.
"""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user

from ..services import authorization, jobs, recovery, submission
from ..services.catalog import get_catalog
from ..services.refusals import Refused
from .common import (
    actor,
    answer_refusal,
    audits_refusals,
    error_page,
    hidden_from_user,
    job_refusal_page,
    job_request,
    job_request_details,
    url_details,
)
from .schemas import StairwayBody
from .targets import PYGMENTS_CSS, sql_sections_html

bp = Blueprint("jobs", __name__)


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once, then the job refusal
    page (or the view's own answer)."""
    return answer_refusal(exc, default=job_refusal_page)


@bp.route("/targets/<name>/plan")
@audits_refusals("job.request", job_request_details)
def plan(name: str):
    """Show the plan of ``?command=&revision=`` from the target's current state."""
    req, _ = job_request(name, request.args)
    authorization.authorize(current_user, req.target, req.command)
    plan = recovery.plan_for(get_catalog(), req)  # a resume of a failed job: its own plan
    from ..core.forecast import forecast_live, rehearsal_marks, worst
    from ..services import lint_gate, promotion, rehearsals

    running = jobs.running_job(name)
    if running is None or not running.is_active:
        jobs.expect_job(get_catalog(), plan)  # a warm process for the confirmation
    forecast = forecast_live(req.target, plan.sql, plan.dialect,
                             url=get_catalog().read_url(req.target))
    rehearsal = rehearsals.latest_for(name, plan)
    return render_template("jobs/plan.html", target=req.target, plan=plan,
                           forecast=forecast, worst=worst(forecast),
                           forecast_wrong=rehearsal_marks(
                               forecast, rehearsal.details.get("observed_locks"))
                           if rehearsal else {},
                           sections=sql_sections_html(plan.sql, plan.findings),
                           pygments_css=PYGMENTS_CSS,
                           running=running if running and running.is_active else None,
                           rehearsal=rehearsal,
                           stairway=rehearsals.latest_for(name, plan, "stairway"),
                           promotion=promotion.evidence(req.target, plan),
                           lint_blocked=lint_gate.blocking(req.target, plan),
                           no_revisions=get_catalog().no_revisions(req.target)
                           if plan.is_empty else None)


@bp.route("/targets/<name>/jobs", methods=["POST"])
@audits_refusals("job.request", job_request_details)
def create(name: str):
    """Confirm a plan: re-plan, compare hashes, start the job (POST + CSRF);
    protected targets go through the request form instead."""
    req, body = job_request(name, request.form)
    job = submission.submit(get_catalog(), current_user, req, actor(),
                      confirmed_hash=body.plan_hash, asks_for="job").job
    return redirect(url_for("jobs.show", job_id=job.id), code=303)


def _job_or_404(job_id: int):
    job = jobs.get_job(job_id)
    if job is None or hidden_from_user(get_catalog().get(job.target)):
        abort(404, description=f"There is no job {job_id}.")
    return job


def _approval(job) -> dict | None:
    """Who approved ``job``: {"request", "approvals"}, or None (started directly)."""
    from ..services import approvals

    found = approvals.request_of_job(job.id)
    if found is None:
        return None
    return {"request": found, "approvals": approvals.approvals_for_current_plan(found)}


def _page(job) -> dict:
    """What the job page and its poll render: the job, its failure report,
    approval, target, output length, and for a failed or abandoned job the
    statement journal (:func:`webapp.services.recovery.journal_report`, read
    once) and the guided recovery built from it."""
    catalog = get_catalog()
    target = catalog.get(job.target)
    found = recovery.journal_report(job, catalog, target)
    return dict(job=job, report=jobs.failure_report(job), approval=_approval(job),
                target=target, offset=len(job.log or ""), journal=found,
                guide=recovery.guidance(job, found))


@bp.route("/jobs/<int:job_id>")
def show(job_id: int):
    """A job: status, who started and approved it, from/to, output (live while it runs)."""
    return render_template("jobs/show.html", **_page(_job_or_404(job_id)))


@bp.route("/jobs/<int:job_id>/status")
def status(job_id: int):
    """Polled every second by the job page with ``?offset=`` (characters of
    output it has): answers the summary and only the output after ``offset``
    (appended by htmx), and 286 (stop polling) once the job has ended. Without
    HX-Request: the summary and the whole output."""
    job = _job_or_404(job_id)
    log = job.log or ""
    context = _page(job)
    headers = {"Vary": "HX-Request", "Cache-Control": "no-store"}
    if request.headers.get("HX-Request") != "true":
        return render_template("jobs/show.html", **context), 200, headers
    offset = request.args.get("offset", "0")
    offset = int(offset) if offset.isdigit() and len(offset) < 12 else 0
    html = render_template("jobs/_update.html", **context, reset=offset > len(log),
                           new_output=log[offset:])
    return html, 200 if job.is_active else 286, headers


@bp.route("/jobs/<int:job_id>/cancel", methods=["POST"])
@audits_refusals("job.cancel", url_details(job_id="job_id"), answer=error_page)
def cancel(job_id: int):
    """Cancel a job still waiting for a queue worker (POST + CSRF)."""
    jobs.cancel_queued(job_id, current_user, actor())
    return redirect(url_for("jobs.show", job_id=job_id), code=303)


def _rehearse(name: str, kind: str):
    from ..services import rehearsals

    req, body = job_request(name, request.form)
    rows = None
    if kind == "stairway":  # the form's row sample (empty: the targets file's)
        rows = StairwayBody.load(StairwayBody.from_form(request.form)).rows
    rehearsals.rehearse(get_catalog(), current_user, req, actor(), plan_hash=body.plan_hash,
                        kind=kind, rows=rows)
    request_id = request.form.get("request_id", "")
    anchor = "#" + kind
    if request_id.isdigit() and len(request_id) < 10:  # rehearsed from a request's page
        return redirect(url_for("requests.show", request_id=int(request_id)) + anchor,
                        code=303)
    kept = {"drop_invalid_indexes": "on"} if req.drop_invalid_indexes else {}
    return redirect(url_for("jobs.plan", name=name, command=req.command,
                            revision=req.revision, **kept) + anchor, code=303)


@bp.route("/jobs/<int:job_id>/blockers/cancel", methods=["POST"])
@audits_refusals("job.cancel_blocker", url_details(job_id="job_id"), answer=error_page)
def cancel_blocker(job_id: int):
    """Cancel the query of a session that blocks this running job (POST +
    CSRF, admin; confirmed in the browser first), then show the job again."""
    from ..services import blocking
    from .schemas import CancelBlockerBody

    body = CancelBlockerBody.load(CancelBlockerBody.from_form(request.form))
    blocking.cancel_blocking_query(get_catalog(), job_id, body.pid, current_user, actor())
    return redirect(url_for("jobs.show", job_id=job_id), code=303)


@bp.route("/targets/<name>/rehearsals", methods=["POST"])
@audits_refusals("rehearsal", job_request_details)
def rehearse(name: str):
    """Rehearse the plan of the form's command/revision on a scratch copy
    (POST + CSRF), then show the plan again with the result."""
    return _rehearse(name, "rehearsal")


@bp.route("/targets/<name>/stairway", methods=["POST"])
@audits_refusals("stairway", job_request_details)
def stairway(name: str):
    """Stairway-test the upgrade plan of the form (POST + CSRF): up, down and
    up again per revision on a scratch copy; then the plan with the result."""
    return _rehearse(name, "stairway")
