"""``/api/v1/requests/<id>/comments`` and ``/new-plan``: a request's thread
and the requester's new plan after changes were requested (same rules as
the request page)."""

from __future__ import annotations

from flask import jsonify, request
from flask_login import current_user

from ..services import review
from ..services.catalog import get_catalog
from ..services.new_plan import submit_new_plan
from ..views.common import actor, audits_refusals, url_details
from ..views.schemas import CommentBody
from . import bp, request_json


@bp.route("/requests/<int:request_id>/comments", methods=["POST"])
@audits_refusals("request.comment", url_details(request="request_id"))
def request_comment(request_id: int):
    """Add ``{"comment": "..."}`` to the request's thread: 201 with the
    request's JSON; 400 empty or too long, 403 role, 404 unknown."""
    body = CommentBody.load(request.get_json(silent=True) or {})
    found = review.comment(get_catalog(), request_id, current_user, body.comment, actor())
    return jsonify(request_json(found)), 201


@bp.route("/requests/<int:request_id>/new-plan", methods=["POST"])
@audits_refusals("request.new_plan", url_details(request="request_id"))
def request_new_plan(request_id: int):
    """The requester re-plans the request after changing the revision files,
    with an optional ``{"comment"}``: 200 with the request's JSON (status
    open, the new ``plan_hash``, earlier approvals void); 403 not the
    requester, 409 ``plan_unchanged`` / ``not_open`` / ``nothing_to_do``."""
    body = CommentBody.load(request.get_json(silent=True) or {})
    found = submit_new_plan(get_catalog(), request_id, current_user, body.comment, actor())
    return jsonify(request_json(found))
