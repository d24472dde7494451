"""An approver's inbox: the approval requests waiting for one user's
decision, and who may decide a request (read-only; nothing here writes)."""

from __future__ import annotations

from ..extensions import db
from ..models import ApprovalRequest, RequestStatus, User, utcnow
from .approvals import can_decide_grants, eligible_approvers, has_decided
from .catalog import Catalog

__all__ = ["INBOX_LIMIT", "awaiting", "eligible_approvers", "may_decide"]

# most requests an inbox looks at (newest first)
INBOX_LIMIT = 200


def may_decide(catalog: Catalog, request: ApprovalRequest, user: User) -> bool:
    """True when ``request`` waits for ``user``: it is open and not expired,
    ``user`` may approve on its target (approver role there), did not
    request it, and has not decided on its current plan yet. A request
    whose changes were requested (``changes_requested``) waits for its
    requester's new plan, not for approvers; once submitted it is open again."""
    return (request.status == RequestStatus.OPEN and request.expires_at > utcnow()
            and request.requester_id != user.id
            and catalog.get(request.target) is not None
            and bool(can_decide_grants(catalog, request, user))
            and not has_decided(request, user))


def awaiting(catalog: Catalog, user: User) -> list[ApprovalRequest]:
    """The requests waiting for ``user``'s decision (:func:`may_decide`),
    newest first; from the dashboard database, at most :data:`INBOX_LIMIT`
    open requests looked at."""
    rows = db.session.execute(
        db.select(ApprovalRequest).where(ApprovalRequest.status == RequestStatus.OPEN,
                                         ApprovalRequest.expires_at > utcnow())
        .order_by(ApprovalRequest.id.desc()).limit(INBOX_LIMIT)).scalars()
    return [r for r in rows if may_decide(catalog, r, user)]

