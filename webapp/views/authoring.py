"""Autogenerate preview, new revisions, drift badge, offline SQL downloads."""

from __future__ import annotations

from flask import Blueprint, Response, abort, redirect, render_template, request, url_for
from flask_login import current_user

from ..core.history import HistoryError
from ..core.runner import TargetProcessError
from ..services import authoring, jobs
from ..services.catalog import get_catalog
from ..services.refusals import Refused
from ..web_input import printable
from .common import actor, answer_refusal, audits_refusals, get_target_or_404, job_refusal_page
from .schemas import RevisionBody
from .targets import PYGMENTS_CSS, highlight_sql

bp = Blueprint("authoring", __name__, url_prefix="/targets/<name>")


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """Every refusal of this blueprint: audited once (when the view names an
    action), then the error page (or the view's own answer)."""
    return answer_refusal(exc)


def _highlight_python(code: str):
    from markupsafe import Markup
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return Markup(highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight")))


@bp.route("/preview")
def preview(name: str):
    """Page; the comparison itself loads as a fragment (it runs env.py)."""
    target = get_target_or_404(name)
    return render_template("authoring/preview.html", target=target, pygments_css=PYGMENTS_CSS)


@bp.route("/preview/result")
def preview_result(name: str):
    """Fragment: changes, script, SQL, lint, and the form to write a revision."""
    target = get_target_or_404(name)
    catalog = get_catalog()
    result = authoring.preview(catalog, target)
    try:
        heads = catalog.history(target).heads
    except HistoryError:
        heads = ()
    template = "authoring/_preview.html" if request.headers.get("HX-Request") == "true" \
        else "authoring/preview_full.html"
    html = render_template(template, target=target, result=result, heads=heads,
                           upgrade_html=_highlight_python("    " + result.upgrade) if result.upgrade
                           else None,
                           downgrade_html=_highlight_python("    " + result.downgrade)
                           if result.downgrade else None,
                           sql_html=highlight_sql(result.sql) if result.sql else None,
                           pygments_css=PYGMENTS_CSS,
                           can_write=authoring.can_write(current_user, target))
    # a SQLite file that does not exist is refused like a plan's (nothing created)
    missing = result.error is not None and result.error.error_type == "DatabaseMissing"
    return html, 409 if missing else 200, {"Vary": "HX-Request"}


def _revision_details(exc: Refused) -> dict:
    return {"target": request.view_args["name"][:64],
            "kind": str(request.form.get("kind", ""))[:20]}


@bp.route("/revisions", methods=["POST"])
@audits_refusals("revision.create", _revision_details, answer=job_refusal_page)
def create_revision(name: str):
    """Write a revision (autogenerate / empty / merge) with Alembic, then show
    it. A refusal answers with the job refusal page (back to the target)."""
    target = get_target_or_404(name)
    body = RevisionBody.load(RevisionBody.from_form(request.form))
    revision = authoring.create_revision(
        get_catalog(), current_user, target, kind=body.kind, message=body.message,
        branch_label=body.branch_label or None, head=body.head or None, actor=actor())
    return redirect(url_for("targets.revision", name=name, revision=revision), code=303)


@bp.route("/drift")
def drift(name: str):
    """Fragment: the drift badge (cached; computed off the dashboard's own request)."""
    target = get_target_or_404(name)
    return render_template("authoring/_drift.html", target=target,
                           drift=authoring.drift(get_catalog(), target))


def _download(target, start: str | None, end: str, sql: str) -> Response:
    filename, text = authoring.sql_file(target, current_user.username, start, end, sql)
    return Response(printable(text), mimetype="application/sql", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


def _check_range_order(history, start: str, end: str) -> None:
    """Abort 400 unless ``start`` comes before ``end``: Alembic answers a
    reversed or empty range (``upgrade B:A --sql`` with B after A) with an
    empty script, which would download as if there were nothing to do."""
    if end in ("heads", "head"):
        if start in history.heads:
            abort(400, description=f"'from' {start} is a head: nothing comes after it.")
        return
    if start == end or start not in history.applied([end]):
        abort(400, description=f"'from' {start} is not before 'to' {end}: it is the same "
                               "revision, comes after it or is on another branch. Choose "
                               "'from' older than 'to'.")


@bp.route("/sql")
def range_sql(name: str):
    """Download ``upgrade FROM:TO --sql`` for revisions chosen from lists
    (``from`` empty or "base" = from base; ``to`` a revision or "heads")."""
    target = get_target_or_404(name)
    catalog = get_catalog()
    try:
        history = catalog.history(target)
    except HistoryError as exc:
        abort(409, description=f"The script directory cannot be read: {exc}")
    start = (request.args.get("from") or "").strip()[:64] or None
    end = (request.args.get("to") or "heads").strip()[:64]
    if start in ("base",):
        start = None
    if start is not None and start not in history.by_id:
        abort(404, description="'from' must be a revision of this target, or base.")
    if end not in history.by_id and end not in ("heads", "head"):
        abort(404, description="'to' must be a revision of this target, or heads.")
    if start is not None:
        _check_range_order(history, start, end)
    try:
        sql = authoring.range_sql(catalog, target, start, end)
    except TargetProcessError as exc:
        abort(422, description=f"Offline SQL could not be generated: {exc.error_type}: {exc}")
    return _download(target, start, end, sql)


@bp.route("/pending.sql")
def pending_sql(name: str):
    """Download the pending range (current → heads), computed from the
    database's current state (Alembic's own --sql would start from base)."""
    target = get_target_or_404(name)
    catalog = get_catalog()
    # a refusal (no audit row: a download is a read) answers with the error page
    plan = jobs.plan_job(catalog, jobs.JobRequest(target, "upgrade", "heads"))
    start = ",".join(plan.current_before) or None
    return _download(target, start, "heads", plan.sql)
