"""The one mapping of service refusals to HTTP statuses (web layer only)."""

from __future__ import annotations

from ..services.refusals import Reason, Refused

HTTP_STATUS: dict[Reason, int] = {
    Reason.ROLE: 403, Reason.POLICY: 403, Reason.SELF_APPROVAL: 403,
    Reason.BAD_INPUT: 400, Reason.PLAN_ERROR: 400,
    Reason.NOT_FOUND: 404, Reason.UNKNOWN_REVISION: 404,
    Reason.BUSY: 409, Reason.PLAN_CHANGED: 409, Reason.NOTHING_TO_DO: 409,
    Reason.NOT_OPEN: 409, Reason.ALREADY_DECIDED: 409, Reason.SCRIPT_DIRECTORY: 409,
    Reason.DATABASE_MISSING: 409,
    Reason.PLAN_FAILED: 422, Reason.UNSUPPORTED: 422,
    Reason.UNREACHABLE: 503,
}


def http_status(refused: Refused) -> int:
    """The HTTP status that answers ``refused`` (every reason has one)."""
    return HTTP_STATUS[refused.reason]
