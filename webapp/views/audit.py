"""Audit log page with filters and CSV export (admin and approver only)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from flask import Blueprint, Response, render_template, request

from ..auth_setup import require_role
from ..services import audit
from ..services.catalog import get_catalog
from ..web_input import printable

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE = 50  # events per page


def _filters() -> dict:
    """Filters from the query string; bad dates are ignored with a message."""
    args = request.args
    values = {k: (args.get(k) or "").strip()[:64] or None
              for k in ("user", "target", "action", "outcome")}
    dates, errors = {}, []
    for key in ("since", "until"):
        raw = (args.get(key) or "").strip()
        if raw:
            try:
                dates[key] = datetime.strptime(raw, "%Y-%m-%d")
            except ValueError:
                errors.append(f"{key}: use YYYY-MM-DD")
    if "until" in dates:
        dates["until"] += timedelta(days=1)  # inclusive day
    return {"username": values["user"], "target": values["target"],
            "action": values["action"], "outcome": values["outcome"], **dates,
            "_errors": errors}


@bp.app_template_filter("audit_details")
def audit_details(text: str) -> list[tuple[str, str]]:
    """An audit event's JSON ``details`` as (key, value) pairs for reading;
    lists are joined with ", ", text that is not a JSON object is one pair."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return [("details", text)]
    if not isinstance(data, dict):
        return [("details", str(data))]
    pairs = []
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        pairs.append((str(key), "—" if value is None else str(value)))
    return pairs


@bp.route("")
@require_role("approver")
def index():
    """Newest events first, filtered by user, target, action, outcome and
    date (UTC), :data:`PAGE` at a time (``?before=<id>``: the next page)."""
    filters = _filters()
    errors = filters.pop("_errors")
    before = request.args.get("before", "")
    events = audit.query(**filters, before=int(before) if before.isdigit() else None,
                         limit=PAGE + 1)
    older = events[PAGE - 1].id if len(events) > PAGE else None
    page_args = {k: v for k, v in request.args.items() if k != "before"}
    return render_template("audit/index.html", events=events[:PAGE], errors=errors,
                           args=request.args, known=audit.known_values(),
                           targets=sorted(get_catalog().targets), older=older,
                           page_args=page_args, first_page=not before.isdigit())


@bp.route("/export.csv")
@require_role("approver")
def export_csv():
    """The same filtered events as CSV (up to 100,000 rows)."""
    filters = _filters()
    filters.pop("_errors")
    # rows stored before web_input's checks may hold lone surrogates
    body = printable(audit.to_csv(audit.query(**filters, limit=100_000)))
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": "attachment; filename=audit.csv"})
