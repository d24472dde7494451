"""Target pages: overview, history with revision graph, revision detail."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer, SqlLexer

from ..core.graph import add_dependencies, layout, row_svg
from ..core.history import History, HistoryError
from ..core.lint import sql_sections
from ..core.runner import TargetProcessError
from ..core.status import TargetStatus
from ..core.targets import Target, TargetUrlMissing
from ..services import changelog, checks, jobs
from ..services.catalog import get_catalog
from .common import get_target_or_404

bp = Blueprint("targets", __name__, url_prefix="/targets")

RECENT = 10  # revisions on the target overview page
RECENT_CHANGES = 5  # changelog entries on it
_FORMATTER = HtmlFormatter(cssclass="highlight", linenos="table")
PYGMENTS_CSS = HtmlFormatter(cssclass="highlight").get_style_defs(".highlight")


def highlight_sql(sql: str) -> Markup:
    """SQL as highlighted HTML (Pygments)."""
    return Markup(highlight(sql, SqlLexer(), HtmlFormatter(cssclass="highlight")))


def sql_sections_html(sql: str, findings: list[dict]) -> list[dict]:
    """A plan's SQL split per revision step, for collapsible sections:
    ``[{"revision", "marker", "html", "findings", "warnings"}]`` in SQL order
    (``findings`` are the plan's lint findings of that revision)."""
    sections = []
    for section in sql_sections(sql):
        mine = [f for f in findings if f.get("revision") == section.revision]
        sections.append({"revision": section.revision, "marker": section.marker,
                         "html": highlight_sql(section.sql.strip("\n")), "findings": mine,
                         "warnings": sum(1 for f in mine if f.get("level", "warning")
                                         == "warning")})
    return sections


def history_rows(history: History, status: TargetStatus, limit: int | None = None) -> list[dict]:
    """Rows for the history table: revision, graph SVG and state on this target.

    ``state`` is "current", "applied", "pending" or None (database unknown).
    """
    applied: set[str] | None = None
    if status.reachable and not status.unknown_current:
        try:
            applied = history.applied(status.current)
        except HistoryError:
            applied = None
    graph = layout([(r.revision, r.down_revisions) for r in history.revisions])
    add_dependencies(graph, {r.revision: r.depends_on for r in history.revisions})
    rows = []
    for info, grow in zip(history.revisions, graph.rows, strict=True):
        if limit is not None and len(rows) >= limit:
            break
        state = None
        if applied is not None:
            state = "current" if info.revision in status.current else (
                "applied" if info.revision in applied else "pending")
        marker = "head" if info.is_head else ("base" if info.is_base else "")
        if state == "current":
            marker = f"{marker} current".strip()
        rows.append({"info": info, "state": state,
                     "svg": Markup(row_svg(grow, graph.width, title=info.revision,
                                           marker=marker))})
    return rows


def _status_and_history(target: Target) -> tuple[TargetStatus, History | None]:
    status = get_catalog().status(target)
    return status, status.history


@bp.route("/<name>")
def show(name: str):
    """Target overview: current revision(s), pending in apply order, recent history."""
    target = get_target_or_404(name)
    status, history = _status_and_history(target)
    rows = history_rows(history, status, limit=RECENT) if history else []
    recent_jobs = jobs.recent_jobs(target.name, limit=10)
    running = next((j for j in recent_jobs if j.is_active), None)
    changes = changelog.group_by_job(changelog.entries(target.name, limit=RECENT_CHANGES))
    return render_template("targets/show.html", target=target, status=status, rows=rows,
                           recent=RECENT, jobs=recent_jobs, running=running, changes=changes,
                           last_job=recent_jobs[0] if recent_jobs else None,
                           edited=checks.checksum_warnings(target.name, history))


@bp.route("/<name>/history")
def history(name: str):
    """All revisions newest first, with the revision graph and applied state."""
    target = get_target_or_404(name)
    catalog = get_catalog()
    status, history = _status_and_history(target)
    table = None
    edited = checks.checksum_warnings(target.name, history)
    if history is not None:
        key = ("history", target.name, history.fingerprint, status.current, status.reachable,
               tuple(sorted((r, w.state) for r, w in edited.items())))
        table = catalog.fragments.get_or_compute(key, lambda: render_template(
            "targets/_history_table.html", rows=history_rows(history, status),
            target=target, history=history, edited=edited))
    return render_template("targets/history.html", target=target, status=status,
                           history=history, table=Markup(table) if table else None,
                           edited=edited)


def _revision_or_404(target: Target, revision: str) -> tuple[History, object]:
    try:
        history = get_catalog().history(target)
    except HistoryError as exc:
        abort(404, description=f"The script directory of {target.name} cannot be read: {exc}")
    info = history.get(revision) if len(revision) <= 64 else None
    if info is None:
        abort(404, description=f"Target {target.name} has no revision {revision[:64]!r}.")
    return history, info


@bp.route("/<name>/revisions/<revision>")
def revision(name: str, revision: str):
    """One revision: metadata, highlighted source, links to its offline SQL."""
    target = get_target_or_404(name)
    history, info = _revision_or_404(target, revision)
    return render_template("targets/revision.html", target=target, info=info,
                           history=history, source_html=revision_source_html(info.path),
                           pygments_css=PYGMENTS_CSS,
                           places=where_applied(info.revision))


def where_applied(revision: str) -> list[dict]:
    """Each target the user may see whose script directory has ``revision``:
    ``{"target", "state": "applied"|"pending"|None (database unknown),
    "entry": its latest changelog entry or None}``, in targets-file order."""
    from flask_login import current_user

    from ..services import accounts

    catalog = get_catalog()
    places = []
    for candidate in accounts.visible_targets(current_user, catalog.targets.values()):
        try:
            if catalog.history(candidate).get(revision) is not None:
                places.append(candidate)
        except HistoryError:
            continue
    last = changelog.last_applied([t.name for t in places], revision)
    found = []
    for status in catalog.statuses(places):
        state = None
        if status.reachable and not status.unknown_current and status.history is not None:
            try:
                state = "applied" if revision in status.history.applied(status.current) \
                    else "pending"
            except HistoryError:
                state = None
        found.append({"target": status.target, "state": state,
                      "entry": last.get(status.target.name)})
    return found


def revision_source_html(path) -> Markup:
    """A revision file's Python source as highlighted HTML (Pygments, with
    line numbers), or an error paragraph when ``path`` cannot be read."""
    try:
        source = path.read_text(encoding="utf-8")
        return Markup(highlight(source, PythonLexer(), _FORMATTER))
    except (OSError, UnicodeDecodeError) as exc:
        return Markup("<p class='error'>cannot read the file: {}</p>").format(exc)


@bp.route("/<name>/revisions/<revision>/sql")
def revision_sql(name: str, revision: str):
    """Fragment: offline SQL of the revision's upgrade and downgrade, in the
    target's dialect (computed by the target's own env.py in a child process)."""
    target = get_target_or_404(name)
    history, info = _revision_or_404(target, revision)
    catalog = get_catalog()
    results = {}
    for direction in ("upgrade", "downgrade"):
        try:
            sql = catalog.revision_sql(target, history, info.revision, direction)
            results[direction] = {"sql": highlight_sql(sql)}
        except TargetProcessError as exc:
            results[direction] = {"error": exc}
        except TargetUrlMissing as exc:
            results[direction] = {"error": TargetProcessError(str(exc), "ConfigurationError")}
    template = "targets/_revision_sql.html"
    if request.headers.get("HX-Request") != "true":
        template = "targets/revision_sql.html"
    response = render_template(template, target=target, info=info, results=results,
                               pygments_css=PYGMENTS_CSS)
    return response, 200, {"Vary": "HX-Request"}
