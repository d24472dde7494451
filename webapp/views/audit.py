"""Audit log page with filters and CSV export (admin and approver only)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from flask import Blueprint, Response, render_template, request

from ..auth_setup import require_role
from ..services import audit
from ..web_input import printable

bp = Blueprint("audit", __name__, url_prefix="/audit")


def _filters() -> dict:
    """Filters from the query string; bad dates are ignored with a message."""
    args = request.args
    values = {k: (args.get(k) or "").strip()[:64] or None for k in ("user", "target", "action")}
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
            "action": values["action"], **dates, "_errors": errors}


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
    """Newest events first, filtered by user, target, action, date (UTC)."""
    filters = _filters()
    errors = filters.pop("_errors")
    events = audit.query(**filters, limit=500)
    return render_template("audit/index.html", events=events, errors=errors, args=request.args)


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
