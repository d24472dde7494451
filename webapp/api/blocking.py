"""``/api/v1/jobs/<id>/blockers/cancel``: cancel a query that blocks a running job."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from ..services import blocking
from ..services.catalog import get_catalog
from ..views.common import actor, audits_refusals, url_details
from ..views.schemas import CancelBlockerBody
from . import bp


@bp.route("/jobs/<int:job_id>/blockers/cancel", methods=["POST"])
@audits_refusals("job.cancel_blocker", url_details(job_id="job_id"))
def cancel_blocker(job_id: int):
    """Cancel the current query of session ``{"pid": n}``, which blocks the
    running job (admin; audited): 200 ``{"pid", "cancelled"}``; 403 for the
    role, 404 for no such job, 409 ``not_open`` when the job is not running
    or the session does not block it now, 400 for a bad body."""
    body = CancelBlockerBody.load(request.get_json(silent=True))
    return jsonify(blocking.cancel_blocking_query(get_catalog(), job_id, body.pid,
                                                  current_user, actor()))
