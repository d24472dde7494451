"""The requester's answer to "request changes": submit the new plan.

After an approver asked for changes (status ``changes_requested``) — or
while the request is still open — its requester changes the revision files
and submits the plan again. The request gets the plan as it is now (pinned
by its hash), earlier approvals are void, the *Viewed* ticks of revisions
whose file changed are cleared, and it is open for review again.
"""

from __future__ import annotations

from ..core.plan import Plan
from ..extensions import db
from ..models import ApprovalRequest, CommentKind, RequestStatus, User, utcnow
from . import audit, events, notify, recovery, review
from .approvals import (
    eligible_approvers,
    expire_requests,
    plan_from_json,
    plan_to_json,
    request_of,
    request_ttl,
)
from .authorization import authorize
from .catalog import Catalog
from .refusals import Reason, Refused

RESUBMITTABLE = (RequestStatus.CHANGES_REQUESTED, RequestStatus.OPEN)


def changed_revisions(old: Plan, new: Plan) -> list[str]:
    """Revisions of ``new`` that are not in ``old`` with the same file
    (SHA-256), in ``new``'s order, then those ``old`` had and ``new`` lacks."""
    before = {s.revision: s.sha256 for s in old.steps}
    after = {s.revision: s.sha256 for s in new.steps}
    return [r for r, sha in after.items() if before.get(r) != sha] + \
        [r for r in before if r not in after]


def submit_new_plan(catalog: Catalog, request_id: int, user: User, comment: str,
                    actor: audit.Actor) -> ApprovalRequest:
    """Re-plan request ``request_id`` from the target's current state and
    revision files, as its requester ``user`` (committed; audited as
    ``request.new_plan``; a system line, and ``comment`` when given, in the
    thread; the request's expiry starts again).

    :raises Refused: 404 no such request (or target), 403 not the requester
        or no longer allowed to request the command there, 400 comment too
        long, 409 the request is not open or awaiting changes, or the plan is
        the same as the one reviewed (:attr:`Reason.PLAN_UNCHANGED`), or
        nothing to do any more; plan errors as :func:`.recovery.plan_for`.
    """
    comment = (comment or "").strip()
    if len(comment) > review.MAX_COMMENT:
        raise Refused(Reason.BAD_INPUT, f"A comment has at most {review.MAX_COMMENT} "
                      "characters.")
    expire_requests()
    request = db.session.get(ApprovalRequest, request_id)
    if request is None:
        raise Refused(Reason.NOT_FOUND, "There is no such request.")
    if request.requester_id != user.id:
        raise Refused(Reason.ROLE, "Only the requester submits a new plan for a request.")
    if request.status not in RESUBMITTABLE:
        raise Refused(Reason.NOT_OPEN, f"Request {request.id} is {request.status}: a new "
                      "plan is only taken while it is open or awaiting changes.")
    target = catalog.get(request.target)
    if target is None:
        raise Refused(Reason.NOT_FOUND, f"Target {request.target} is no longer configured.")
    actor = actor.granted(authorize(user, target, request.command))
    old, old_hash = plan_from_json(request.plan), request.plan_hash
    plan = recovery.plan_for(catalog, request_of(target, request))
    if plan.is_empty:
        raise Refused(Reason.NOTHING_TO_DO, "Nothing to do any more: the database is already "
                      "there. Withdraw the request.")
    if plan.hash == request.plan_hash:
        raise Refused(Reason.PLAN_UNCHANGED, "The plan is the same as the one reviewed: "
                      "change the revision files first, then submit the new plan.")
    changed = changed_revisions(old, plan)
    voided = sum(1 for a in request.approvals if not a.void)
    for approval in request.approvals:
        approval.void = True
    request.plan, request.plan_hash = plan_to_json(plan), plan.hash
    cleared = review.clear_changed_views(request, plan)
    request.status, request.decided_at, request.note = RequestStatus.OPEN, None, None
    request.expires_at = utcnow() + request_ttl()
    line = (f"New plan submitted by {user.username}: "
            + (f"changed {', '.join(r[:12] for r in changed)}" if changed
               else "same revision files, the SQL or the current revision differ")
            + f". {voided} earlier decision{'' if voided == 1 else 's'} void; "
              "review the changed revisions again.")
    review.add_entry(request, CommentKind.SYSTEM, line, None)
    if comment:
        review.add_entry(request, CommentKind.COMMENT, comment, user)
    audit.record(actor, "request.new_plan", "ok", target=request.target, commit=False,
                 request=request.id, old_plan_hash=old_hash, plan_hash=plan.hash,
                 changed=changed, voided=voided, views_cleared=cleared)
    db.session.commit()
    notify.send("request.new_plan", request.target, request=request.id,
                requester=user.username, changed=changed,
                approvers=eligible_approvers(catalog, request),
                text=f"{user.username} submitted a new plan for request {request.id} on "
                     f"{request.target}: review it again")
    events.request_waiting.send(request, catalog=catalog, waits_for="approvers",
                                new_plan=True)
    return request
