"""Approval requests for protected targets.

On a target whose policy has ``approvals_required >= 1`` a confirmed plan
becomes an :class:`~webapp.models.ApprovalRequest`, not a job. Approvers
(never the requester) approve or reject it; each approval is pinned to the
plan's hash. When enough distinct approvers agree, the job starts (policy
``run_on_approval``) or the requester starts it — in both cases only after
the plan is computed again and found identical; otherwise the approvals are
void and the request goes back to review.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from ..core.permissions import Role
from ..core.plan import Plan, PlanStep
from ..core.targets import Target
from ..extensions import db
from ..models import (
    REQUEST_PENDING,
    Approval,
    ApprovalRequest,
    CommentKind,
    Job,
    RequestStatus,
    RolloutStep,
    StepStatus,
    User,
    utcnow,
)
from . import accounts, audit, events, lint_gate, notify, promotion, recovery, review
from .authorization import authorize_run_as
from .catalog import Catalog
from .jobs import JobRequest, start_job
from .refusals import Reason, Refused

MAX_REASON = 2000
MAX_COMMENT = 2000


def request_ttl() -> timedelta:
    """How long a request waits before it expires (``REQUEST_TTL_HOURS``, default 24)."""
    return timedelta(hours=float(current_app.config.get("REQUEST_TTL_HOURS", 24)))


def plan_to_json(plan: Plan) -> str:
    """Serialise a plan for storage with its request."""
    return json.dumps({**asdict(plan), "hash": plan.hash})


# keys of plans stored before the before/after vocabulary was unified
_OLD_PLAN_KEYS = {"current": "current_before", "heads_after": "current_after"}


def plan_from_json(text: str) -> Plan:
    """The plan stored with a request (:func:`plan_to_json`'s text). A plan
    stored by an older version (``current``/``heads_after``) loads too."""
    data = json.loads(text)
    data.pop("hash", None)
    for old, new in _OLD_PLAN_KEYS.items():
        if old in data:
            data.setdefault(new, data.pop(old))
    data["steps"] = [PlanStep(**s) for s in data["steps"]]
    return Plan(**data)


def request_of(target: Target, request: ApprovalRequest) -> JobRequest:
    """The :class:`JobRequest` an approval request stands for: its command
    and revision, whether its stored plan drops INVALID indexes first, and
    the failed job it recovers (``recovery_of``: a compensation when its
    command is ``compensate``, else a resume; see :mod:`.recovery`)."""
    compensating = request.command == "compensate"
    return JobRequest(target, request.command, request.revision,
                      drop_invalid_indexes=bool(plan_from_json(request.plan).drop_indexes),
                      resume_of=None if compensating else request.recovery_of,
                      compensate_of=request.recovery_of if compensating else None)


def approvals_for_current_plan(request: ApprovalRequest) -> list[Approval]:
    """Non-void approvals ("approve") given for the request's current plan."""
    return [a for a in request.approvals
            if a.decision == "approve" and not a.void and a.plan_hash == request.plan_hash]


def expire_requests() -> list[int]:
    """Mark open or approved-but-not-run requests past their expiry as
    expired (committed), then send :data:`webapp.services.events.request_ended`
    for each. Returns their ids."""
    now = utcnow()
    stale = list(db.session.execute(db.select(ApprovalRequest).where(
        ApprovalRequest.status.in_(REQUEST_PENDING),
        ApprovalRequest.expires_at < now)).scalars())
    for request in stale:
        request.status, request.decided_at = RequestStatus.EXPIRED, now
        audit.record(audit.SYSTEM, "request.expire", "expired", target=request.target,
                     commit=False, request=request.id)
    db.session.commit()
    if stale:
        from .catalog import get_catalog

        catalog = get_catalog()
        for request in stale:
            notify.send("request.expired", request.target, request=request.id,
                        approvers=eligible_approvers(catalog, request))
            events.request_ended.send(request, catalog=catalog)
    return [r.id for r in stale]


def get_request(request_id: int) -> ApprovalRequest | None:
    """The request, or None. Writes nothing itself (a GET reads it): stale
    requests are expired by the housekeeping, or its throttled fallback on
    :data:`webapp.services.events.state_read`, sent here."""
    events.state_read.send()
    return db.session.get(ApprovalRequest, request_id)


def _current_request(request_id: int) -> ApprovalRequest | None:
    """The request after expiring stale ones now (for decisions: a POST)."""
    expire_requests()
    return db.session.get(ApprovalRequest, request_id)


def list_requests(*, open_only: bool = False, limit: int = 100,
                  targets: list[str] | None = None) -> list[ApprovalRequest]:
    """Requests newest first; ``open_only`` keeps open and approved ones;
    ``targets`` keeps those on these target names (the ones a user may see).
    Sends :data:`webapp.services.events.state_read` first, as :func:`get_request`."""
    events.state_read.send()
    stmt = db.select(ApprovalRequest).order_by(ApprovalRequest.id.desc()).limit(limit)
    if open_only:
        stmt = stmt.where(ApprovalRequest.status.in_(REQUEST_PENDING))
    if targets is not None:
        stmt = stmt.where(ApprovalRequest.target.in_(targets))
    return list(db.session.execute(stmt).scalars())


def create_request(catalog: Catalog, user: User, req: JobRequest, plan: Plan, reason: str,
                   actor: audit.Actor, *, confirmed_hash: str | None = None
                   ) -> ApprovalRequest:
    """Store a plan as a request awaiting approval.

    :raises Refused: 400 bad reason, 409 plan changed since shown.
    """
    reason = (reason or "").strip()
    if not 1 <= len(reason) <= MAX_REASON:
        raise Refused(Reason.BAD_INPUT, f"Give a reason (1-{MAX_REASON} characters) for "
                         "the approvers.")
    if confirmed_hash is not None and confirmed_hash != plan.hash:
        raise Refused(Reason.PLAN_CHANGED, "The plan changed since it was shown: review "
                         "it again.")
    if plan.is_empty:
        raise Refused(Reason.NOTHING_TO_DO, "Nothing to do: the database is already there.")
    request = ApprovalRequest(target=req.target.name, command=req.command,
                              revision=req.revision, requester_id=user.id, reason=reason,
                              plan_hash=plan.hash, plan=plan_to_json(plan),
                              expires_at=utcnow() + request_ttl(),
                              recovery_of=req.resume_of or req.compensate_of)
    db.session.add(request)
    db.session.flush()
    audit.record(actor, "request.create", "ok", target=req.target.name, commit=False,
                 request=request.id, command=req.command, revision=req.revision,
                 plan_hash=plan.hash, steps=[s.revision for s in plan.steps])
    db.session.commit()
    notify.send("request.created", req.target.name, request=request.id,
                requester=user.username, command=req.command, revision=req.revision,
                reason=reason, required=req.target.policy.approvals_required,
                approvers=eligible_approvers(catalog, request),
                text=f"{user.username} requests approval for `alembic {req.command} "
                     f"{req.revision}` on {req.target.name}: {reason}")
    events.request_waiting.send(request, catalog=catalog, waits_for="approvers")
    return request


def eligible_approvers(catalog: Catalog, request: ApprovalRequest) -> list[str]:
    """Usernames of the active accounts that may decide ``request`` (the
    approver role on its target, from their global role or a grant; never
    its requester), by name; from the dashboard database. Empty when the
    target is no longer configured."""
    if catalog.get(request.target) is None:
        return []
    return [u.username for u in accounts.list_users()
            if u.is_active and u.id != request.requester_id
            and bool(can_decide_grants(catalog, request, u))]


def has_decided(request: ApprovalRequest, user: User) -> bool:
    """True when ``user`` approved or rejected ``request``'s current plan
    already (a decision on an earlier plan was voided and does not count)."""
    return any(a.approver_id == user.id and not a.void and a.plan_hash == request.plan_hash
               for a in request.approvals)


def can_decide_grants(catalog: Catalog, request: ApprovalRequest, user: User) -> list[str]:
    """The grants that let ``user`` approve or reject requests on the
    request's target (empty: the user may not decide there)."""
    access = accounts.access_on(user, catalog.get(request.target))
    return access.granted_by(Role.APPROVER) if access.allows(Role.APPROVER) else []


def _open_for_decision(catalog: Catalog, request: ApprovalRequest | None,
                       user: User) -> tuple[ApprovalRequest, list[str]]:
    if request is None:
        raise Refused(Reason.NOT_FOUND, "There is no such request.")
    granted_by = can_decide_grants(catalog, request, user)
    if not granted_by:
        raise Refused(Reason.ROLE, f"Approving on {request.target} needs the approver "
                      f"role; your role there is "
                      f"{accounts.role_on(user, catalog.get(request.target)).label}.")
    if request.requester_id == user.id:
        raise Refused(Reason.SELF_APPROVAL, "You cannot approve or reject your own "
                         "request: another approver must decide.")
    if request.status != RequestStatus.OPEN:
        raise Refused(Reason.NOT_OPEN, f"Request {request.id} is {request.status}, "
                         "not open.")
    return request, granted_by


# decision (as stored on the approval) → (audit action, webhook event, thread line)
DECISIONS = {
    "approve": ("request.approve", "request.approved", "approved"),
    "changes": ("request.request_changes", "request.changes_requested", "requested changes"),
    "reject": ("request.reject", "request.rejected", "rejected"),
}


def _checked_comment(decision: str, comment: str) -> str:
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT:
        raise Refused(Reason.BAD_INPUT, f"A comment has at most {MAX_COMMENT} characters.")
    if decision not in DECISIONS:
        raise Refused(Reason.BAD_INPUT, "decision must be approve, request-changes or reject")
    if decision == "reject" and not comment:
        raise Refused(Reason.BAD_INPUT, "Give a reason to reject: the requester sees it and "
                      "needs to know what to change.")
    if decision == "changes" and not comment:
        raise Refused(Reason.BAD_INPUT, "Give a reason to request changes: say what the "
                      "requester should change.")
    return comment


def decide(catalog: Catalog, request_id: int, user: User, decision: str, comment: str,
           actor: audit.Actor, *, without_viewing: bool = False
           ) -> tuple[ApprovalRequest, Job | None]:
    """Record ``user``'s decision (with a line in the request's thread); start
    the job when approved enough and the policy runs on approval.

    :param decision: "approve", "changes" (request changes: the request
        waits, ``changes_requested``, for its requester's new plan) or "reject".
    :param without_viewing: approve although ``user`` has not ticked every
        revision of the plan as viewed (recorded on the approval and in the
        thread). Without it such an approval is refused.
    :return: the request and, when it started, the job.
    :raises Refused: 400 comment over :data:`MAX_COMMENT` characters, or a
        rejection or request for changes without one (the requester must
        learn why), 403 role / self-approval, 404 unknown, 409 not open,
        already decided, not every revision viewed, or plan changed since
        approval (request back to review).
    """
    comment = _checked_comment(decision, comment)
    request, granted_by = _open_for_decision(catalog, _current_request(request_id), user)
    actor = actor.granted(granted_by)
    if has_decided(request, user):
        raise Refused(Reason.ALREADY_DECIDED, "You have already decided on this request.")
    viewed_all = review.all_viewed(request, plan_from_json(request.plan), user)
    if decision == "approve" and not viewed_all and not without_viewing:
        raise Refused(Reason.NOT_REVIEWED, "Tick every revision as viewed before approving, "
                      "or say explicitly that you approve without viewing them.")
    unseen = decision == "approve" and not viewed_all
    db.session.add(Approval(request=request, approver_id=user.id, decision=decision,
                            comment=comment, plan_hash=request.plan_hash,
                            without_viewing=unseen))
    action, event, line = DECISIONS[decision]
    if unseen:
        line = "approved without viewing every revision"
    review.add_entry(request, CommentKind.DECISION, f"{line}: {comment}" if comment else line,
                     user)
    if decision != "approve":
        return _ended_or_waiting(catalog, request, user, decision, comment, actor), None
    audit.record(actor, action, "ok", target=request.target, commit=False,
                 request=request.id, comment=comment, plan_hash=request.plan_hash,
                 without_viewing=unseen)
    db.session.flush()
    target = catalog.get(request.target)
    required = target.policy.approvals_required if target else 1
    approvers = {a.approver_id for a in approvals_for_current_plan(request)}
    if len(approvers) >= required:
        request.status, request.decided_at = RequestStatus.APPROVED, utcnow()
    db.session.commit()
    notify.send(event, request.target, request=request.id,
                approver=user.username, comment=comment, approvals=len(approvers),
                required=required, status=request.status,
                approvers=eligible_approvers(catalog, request),
                text=f"{user.username} approved request {request.id} on {request.target} "
                     f"({len(approvers)}/{required})")
    job = None
    if request.status == RequestStatus.APPROVED and target is not None \
            and target.policy.run_on_approval:
        try:
            check_requester(request, target, actor)
        except Refused:  # recorded on the request and audited; the approval stands
            return request, None
        try:
            job = run_approved(catalog, request, actor)
        except Refused as exc:
            if exc.reason not in (Reason.NOT_PROMOTED, Reason.LINT_BLOCKED):
                raise
            return request, None  # recorded on the request and audited; the approval stands
    return request, job


def _ended_or_waiting(catalog: Catalog, request: ApprovalRequest, user: User, decision: str,
                      comment: str, actor: audit.Actor) -> ApprovalRequest:
    """A rejection (the request ends) or a request for changes (it waits for
    the requester's new plan): status, audit, webhook, committed."""
    action, event, line = DECISIONS[decision]
    if decision == "reject":
        request.status, request.decided_at = RequestStatus.REJECTED, utcnow()
    else:
        request.status = RequestStatus.CHANGES_REQUESTED
    audit.record(actor, action, "ok", target=request.target, commit=False,
                 request=request.id, comment=comment)
    db.session.commit()
    notify.send(event, request.target, request=request.id, approver=user.username,
                comment=comment, approvers=eligible_approvers(catalog, request),
                text=f"{user.username} {line} on request {request.id} on {request.target}: "
                     f"{comment}")
    if decision == "reject":
        events.request_ended.send(request, catalog=catalog)
    else:
        events.request_waiting.send(request, catalog=catalog, waits_for="requester",
                                    by=user.username, comment=comment)
    return request


def check_requester(request: ApprovalRequest, target: Target, actor: audit.Actor) -> None:
    """Refuse to run ``request`` when its requester may no longer run it
    (:func:`authorize_run_as`); the refusal is audited (``request.run``
    refused) and shown on the request (its note) and on its rollout step.
    The request stays approved: re-enabled or promoted, the requester may
    run it before it expires.

    :raises Refused: as :func:`authorize_run_as`.
    """
    requester = request.requester or db.session.get(User, request.requester_id)
    try:
        authorize_run_as(requester, target, request.command, who="requester")
    except Refused as exc:
        _not_run(request, exc, actor, requester)
        raise


def _not_run(request: ApprovalRequest, exc: Refused, actor: audit.Actor,
             requester: User | None) -> None:
    """Record why the approved ``request`` did not run (its note, its
    rollout step's note, the audit log) and commit; it stays approved."""
    request.note = f"Not run: {exc}."  # shown on the request page and in its JSON
    db.session.execute(update(RolloutStep).where(
        RolloutStep.request_id == request.id,
        RolloutStep.status == StepStatus.AWAITING_APPROVAL).values(note=request.note))
    audit.record(actor, "request.run", "refused", target=request.target, commit=False,
                 request=request.id, requester=requester.username if requester else None,
                 reason=exc.reason, message=str(exc))
    db.session.commit()


def run_approved_by(catalog: Catalog, request: ApprovalRequest, user: User,
                    actor: audit.Actor) -> Job:
    """``user`` starts the job of an approved request (targets whose policy
    has ``run_on_approval = false``): only its requester may, then as
    :func:`run_approved`.

    :raises Refused: 403 (role) ``user`` is not the requester; else as
        :func:`run_approved`.
    """
    if request.requester_id != user.id:
        raise Refused(Reason.ROLE, "Only the requester runs an approved request.")
    return run_approved(catalog, request, actor)


def run_approved(catalog: Catalog, request: ApprovalRequest, actor: audit.Actor) -> Job:
    """Start the job of an approved request (a POST) after expiring stale
    requests, and checking again that its requester may run it
    (:func:`check_requester`) and that its plan holds.

    :raises Refused: 403 the requester is disabled or no longer allowed
        (audited, shown on the request), 409 plan changed since approval (the
        approvals are void and the request is open again), 409 not promoted
        (:func:`webapp.services.promotion.check`), 409 busy, 403/503
        as start_job.
    """
    expire_requests()  # an approved request past its time never runs
    db.session.refresh(request)
    target = catalog.get(request.target)
    if target is None:
        raise Refused(Reason.NOT_FOUND, f"Target {request.target} is no longer configured.")
    if request.status != RequestStatus.APPROVED:
        raise Refused(Reason.NOT_OPEN, f"Request {request.id} is {request.status}, "
                         "not approved.")
    check_requester(request, target, actor)
    req = request_of(target, request)
    try:
        plan = recovery.plan_for(catalog, req)
    except Refused as exc:
        if exc.reason in (Reason.UNREACHABLE, Reason.DATABASE_MISSING):
            raise
        plan = None
    if plan is None or plan.hash != request.plan_hash:
        back_to_review(request, "the plan changed since approval (the database's current "
                       "revision, a revision file or the SQL differ)", actor, plan)
        raise Refused(Reason.PLAN_CHANGED, "Plan changed since approval: the approvals "
                         f"are void and request {request.id} is back to review.")
    requester = request.requester or db.session.get(User, request.requester_id)
    try:  # staging may have moved since (a revision downgraded there, a file edited)
        promotion.check(target, plan)
        lint_gate.check(target, plan)  # the tier's lint levels may have changed
    except Refused as exc:
        _not_run(request, exc, actor, requester)
        raise
    job = start_job(catalog, requester, req, plan, actor, confirmed_hash=request.plan_hash,
                    approved_request=request.id)
    request.status, request.job_id = RequestStatus.EXECUTED, job.id
    db.session.commit()
    return job


def back_to_review(request: ApprovalRequest, why: str, actor: audit.Actor,
                   new_plan: Plan | None = None) -> None:
    """Void the request's approvals and reopen it with the plan as it is now
    (when it can be computed), so approvers review what would really run."""
    for approval in request.approvals:
        approval.void = True
    if new_plan is not None:
        request.plan, request.plan_hash = plan_to_json(new_plan), new_plan.hash
        review.clear_changed_views(request, new_plan)
    request.status, request.decided_at = RequestStatus.OPEN, None
    request.note = f"Back to review: {why}."
    review.add_entry(request, CommentKind.SYSTEM, f"{request.note} The approvals are void.",
                     None)
    audit.record(actor, "request.plan_changed", "refused", target=request.target,
                 commit=False, request=request.id, why=why)
    db.session.commit()


def withdraw(request_id: int, user: User, actor: audit.Actor) -> ApprovalRequest:
    """The requester takes back an open or approved request.

    :raises Refused: 404, 403 not the requester, 409 not open.
    """
    request = _current_request(request_id)
    if request is None:
        raise Refused(Reason.NOT_FOUND, "There is no such request.")
    if request.requester_id != user.id:
        raise Refused(Reason.ROLE, "Only the requester can withdraw a request.")
    if request.status not in REQUEST_PENDING:
        raise Refused(Reason.NOT_OPEN, f"Request {request.id} is {request.status}.")
    request.status, request.decided_at = RequestStatus.WITHDRAWN, utcnow()
    audit.record(actor, "request.withdraw", "ok", target=request.target, commit=False,
                 request=request.id)
    db.session.commit()
    from .catalog import get_catalog

    events.request_ended.send(request, catalog=get_catalog())
    return request


def request_of_job(job_id: int) -> ApprovalRequest | None:
    """The approval request that started job ``job_id`` (None: the job was
    started directly). Its approvals, read with :func:`approvals_for_current_plan`,
    say who approved the job."""
    return db.session.execute(db.select(ApprovalRequest).where(
        ApprovalRequest.job_id == job_id)).scalars().first()
