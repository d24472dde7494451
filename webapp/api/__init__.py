"""JSON API ``/api/v1`` for pipelines (shapes fixed in PRODUCT.md).

Authentication: ``Authorization: Bearer <token>`` or a logged-in session.
Bearer requests need no CSRF token; session requests that change state must
send the ``X-CSRFToken`` header.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify

from ..auth_setup import bearer_token
from ..core.history import HistoryError
from ..extensions import csrf
from ..services.catalog import get_catalog

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)


@bp.before_request
def csrf_for_sessions():
    """CSRF applies to session-authenticated state changes, not to bearer tokens."""
    from flask import request

    if request.method not in ("GET", "HEAD", "OPTIONS") and bearer_token() is None:
        csrf.protect()


@bp.route("/targets")
def targets():
    """``[{"name", "tier", "current", "heads", "pending", "reachable"}]`` for every target.

    Extra fields: ``label``, ``error`` (why unreachable; no password).
    """
    result = []
    for status in get_catalog().statuses():
        result.append({
            "name": status.target.name,
            "label": status.target.label,
            "tier": status.target.tier,
            "current": list(status.current),
            "heads": list(status.heads),
            "pending": len(status.pending),
            "reachable": status.reachable,
            "error": status.error or status.history_error,
        })
    return jsonify(result)


@bp.route("/targets/<name>/history")
def history(name: str):
    """Revisions newest first: ``revision``, ``down_revision`` (list), ``message``,
    ``is_head``, ``is_branch_point``, ``is_merge_point``, ``applied`` (bool, or
    null when the database is unreachable), plus ``branch_labels``,
    ``depends_on``, ``create_date``."""
    catalog = get_catalog()
    target = catalog.get(name)
    if target is None:
        abort(404, description=f"no target called {name[:80]!r}")
    status = catalog.status(target)
    if status.history is None:
        return jsonify(error="script directory unreadable", detail=status.history_error), 409
    applied: set[str] | None = None
    if status.reachable and not status.unknown_current:
        try:
            applied = status.history.applied(status.current)
        except HistoryError:
            applied = None
    return jsonify([{
        "revision": info.revision,
        "down_revision": list(info.down_revisions),
        "message": info.message,
        "is_head": info.is_head,
        "is_branch_point": info.is_branch_point,
        "is_merge_point": info.is_merge_point,
        "applied": (info.revision in applied) if applied is not None else None,
        "branch_labels": list(info.branch_labels),
        "depends_on": list(info.depends_on),
        "create_date": info.create_date,
    } for info in status.history.revisions])
