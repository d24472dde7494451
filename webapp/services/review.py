"""Reviewing a request before deciding it: the approvers' *Viewed* ticks per
revision, the request's comment thread, and the checks summary (rehearsal,
lint, staging) shown next to the decision.

Everything here reads or writes the dashboard database only. Decisions
themselves are :func:`webapp.services.approvals.decide`, which asks
:func:`all_viewed` and writes its thread entry with :func:`add_entry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.permissions import Role
from ..core.plan import Plan
from ..extensions import db
from ..models import (
    REQUEST_PENDING,
    AppliedRevision,
    ApprovalRequest,
    CommentKind,
    Rehearsal,
    RequestComment,
    RequestStatus,
    RequestView,
    User,
)
from . import accounts, audit, lint_gate, promotion
from .catalog import Catalog
from .refusals import Reason, Refused

MAX_COMMENT = 2000  # characters of a thread comment (as an approval's comment)


def _step_files(plan: Plan) -> dict[str, str]:
    """Revision id → SHA-256 of its file, for every step of ``plan`` ("" when
    the plan has no checksum for it, e.g. a stamp)."""
    return {step.revision: step.sha256 or "" for step in plan.steps}


def viewed_revisions(request: ApprovalRequest, plan: Plan, user: User) -> set[str]:
    """The revisions of ``plan`` (the request's current plan) that ``user``
    ticked as viewed with the revision file as it is in ``plan`` (a tick on
    an earlier version of the file does not count)."""
    files = _step_files(plan)
    return {v.revision for v in request.views
            if v.user_id == user.id and files.get(v.revision) == v.sha256}


def all_viewed(request: ApprovalRequest, plan: Plan, user: User) -> bool:
    """True when ``user`` ticked every revision of ``plan`` as viewed."""
    return set(_step_files(plan)) <= viewed_revisions(request, plan, user)


def _open_request(request_id: int) -> ApprovalRequest:
    request = db.session.get(ApprovalRequest, request_id)
    if request is None:
        raise Refused(Reason.NOT_FOUND, "There is no such request.")
    return request


def mark_viewed(catalog: Catalog, request_id: int, user: User, revision: str, viewed: bool,
                plan: Plan, actor: audit.Actor) -> ApprovalRequest:
    """Tick (``viewed`` True) or untick ``revision`` of request ``request_id``
    for ``user`` (committed, audited as ``request.view``). The tick records
    the revision file's SHA-256 and the plan hash from ``plan`` (the
    request's stored plan).

    :raises Refused: 404 no such request, 403 the user may not decide on its
        target or is its requester, 409 the request is not open, 400 the
        revision is not one of the plan's.
    """
    request = _open_request(request_id)
    access = accounts.access_on(user, catalog.get(request.target))
    if not access.allows(Role.APPROVER):
        raise Refused(Reason.ROLE, f"Reviewing requests on {request.target} needs the "
                      f"approver role; your role there is {access.role.label}.")
    if request.requester_id == user.id:
        raise Refused(Reason.SELF_APPROVAL, "You cannot review your own request: another "
                      "approver must.")
    if request.status != RequestStatus.OPEN:
        raise Refused(Reason.NOT_OPEN, f"Request {request.id} is {request.status}, not open.")
    files = _step_files(plan)
    if revision not in files:
        raise Refused(Reason.BAD_INPUT, f"{revision[:64]!r} is not a revision of request "
                      f"{request.id}'s plan.")
    mine = next((v for v in request.views if v.user_id == user.id and v.revision == revision),
                None)
    if viewed:
        if mine is None:
            mine = RequestView(request_id=request.id, user_id=user.id, revision=revision,
                               sha256="", plan_hash="")
            request.views.append(mine)
        mine.sha256, mine.plan_hash = files[revision], request.plan_hash
    elif mine is not None:
        request.views.remove(mine)
    audit.record(actor.granted(access.granted_by(Role.APPROVER)), "request.view", "ok",
                 target=request.target, commit=False, request=request.id, revision=revision,
                 viewed=viewed)
    db.session.commit()
    return request


def clear_changed_views(request: ApprovalRequest, plan: Plan) -> int:
    """Delete the ticks on ``request`` whose revision is not in ``plan`` or
    whose file changed (not committed). Returns how many were deleted."""
    files = _step_files(plan)
    stale = [v for v in request.views if files.get(v.revision) != v.sha256]
    for view in stale:
        request.views.remove(view)
    return len(stale)


def add_entry(request: ApprovalRequest, kind: CommentKind, body: str,
              author: User | None) -> RequestComment:
    """Append an entry to ``request``'s thread (not committed): a comment, a
    decision line or a system note (``author`` None), on its current plan."""
    entry = RequestComment(kind=kind, body=body, plan_hash=request.plan_hash,
                           author_id=author.id if author else None)
    request.comments.append(entry)
    return entry


def comment(catalog: Catalog, request_id: int, user: User, body: str,
            actor: audit.Actor) -> ApprovalRequest:
    """``user`` adds a comment to request ``request_id``'s thread (committed,
    audited as ``request.comment`` without the text). The requester and
    anyone with the operator role or above on the target may comment, on a
    request in any state.

    :raises Refused: 404 no such request, 400 empty or over
        :data:`MAX_COMMENT` characters, 403 role.
    """
    request = _open_request(request_id)
    body = (body or "").strip()
    if not 1 <= len(body) <= MAX_COMMENT:
        raise Refused(Reason.BAD_INPUT, f"Write a comment (1-{MAX_COMMENT} characters).")
    access = accounts.access_on(user, catalog.get(request.target))
    if request.requester_id != user.id and not access.allows(Role.OPERATOR):
        raise Refused(Reason.ROLE, f"Commenting on requests on {request.target} needs the "
                      f"operator role; your role there is {access.role.label}.")
    add_entry(request, CommentKind.COMMENT, body, user)
    audit.record(actor, "request.comment", "ok", target=request.target, commit=False,
                 request=request.id, characters=len(body))
    db.session.commit()
    return request


# how bad a finding is, worst first
_LEVEL_ORDER = {"error": -1, "warning": 0, "info": 1}


@dataclass
class ChecksSummary:
    """What the checks say about a request's current plan, for the summary
    next to the decision.

    ``state``: "failed" (the rehearsal failed: never shown as green),
    "warnings" (lint warnings), "unrehearsed" (no rehearsal of this plan),
    "ok" (rehearsed and no lint warning); "errors" before "warnings" when
    a finding is error-level (a tier's ``[tiers.<tier>.lint]``).
    ``warnings`` are the lint errors and warnings, worst first (dicts as
    stored with the plan); ``lint_blocked`` the errors when the tier blocks
    on them (the plan cannot run: :mod:`webapp.services.lint_gate`); ``notes`` the info findings,
    one per rule and explanation, with the ``revisions`` it applies to (the
    SQLite table-rebuild note is shown once, not per revision);
    ``staging``: per plan revision, ``{"revision", "target", "same_file",
    "applied_at"}`` when a staging-tier target applied it (from the
    dashboard's applied-revision checksums), else ``{"revision", "target":
    None}``; ``promotion``: the evidence when the target is promoted from
    another (policy ``promote_from``; :mod:`webapp.services.promotion`).
    """

    state: str
    rehearsal: Rehearsal | None
    warnings: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    staging: list[dict] = field(default_factory=list)
    promotion: promotion.Evidence | None = None
    lint_blocked: list[dict] = field(default_factory=list)


def checks_summary(catalog: Catalog, request: ApprovalRequest, plan: Plan,
                   rehearsal: Rehearsal | None) -> ChecksSummary:
    """The :class:`ChecksSummary` of ``plan`` (the request's current plan)
    with its newest ``rehearsal`` (or None)."""
    findings = sorted(plan.findings, key=lambda f: _LEVEL_ORDER.get(f.get("level") or
                                                                    "warning", 0))
    warnings = [f for f in findings if (f.get("level") or "warning") != "info"]
    notes: dict[tuple[str, str], dict] = {}
    for f in findings:
        if (f.get("level") or "warning") == "info":
            note = notes.setdefault((f["rule"], f["why"]),
                                    {"rule": f["rule"], "why": f["why"], "revisions": []})
            if f.get("revision") and f["revision"] not in note["revisions"]:
                note["revisions"].append(f["revision"])
    if rehearsal is not None and not rehearsal.passed:
        state = "failed"
    elif any(f.get("level") == "error" for f in warnings):
        state = "errors"
    elif warnings:
        state = "warnings"
    elif rehearsal is None:
        state = "unrehearsed"
    else:
        state = "ok"
    target = catalog.get(request.target)
    return ChecksSummary(state, rehearsal, warnings, list(notes.values()),
                         _staging(catalog, request, plan),
                         promotion.evidence(target, plan) if target else None,
                         lint_gate.blocking(target, plan) if target else [])


def _staging(catalog: Catalog, request: ApprovalRequest, plan: Plan) -> list[dict]:
    """Where staging-tier targets (other than the request's) applied the
    plan's revisions, and whether with the same file."""
    staging = [t.name for t in catalog.targets.values()
               if t.tier == "staging" and t.name != request.target]
    if not staging or not plan.steps:
        return []
    rows = db.session.execute(db.select(AppliedRevision).where(
        AppliedRevision.target.in_(staging),
        AppliedRevision.revision.in_([s.revision for s in plan.steps]))).scalars()
    applied: dict[str, AppliedRevision] = {}
    for row in rows:
        if row.revision not in applied or row.applied_at > applied[row.revision].applied_at:
            applied[row.revision] = row
    result = []
    for step in plan.steps:
        row = applied.get(step.revision)
        result.append({"revision": step.revision, "target": row.target if row else None,
                       "same_file": bool(row and step.sha256 and row.sha256 == step.sha256),
                       "applied_at": row.applied_at if row else None})
    return result


def next_step(request: ApprovalRequest) -> str | None:
    """What the requester does next, in a sentence (None: nothing to do or
    wait): after changes requested, after a rejection, after expiry."""
    if request.status == RequestStatus.CHANGES_REQUESTED:
        return ("An approver asked for changes (see the thread). Change the revision files "
                "in the script directory, then submit the new plan below: the approvers "
                "review it again.")
    if request.status == RequestStatus.REJECTED:
        return ("This request was rejected and cannot be run. Read the reason in the thread, "
                "change the revisions, then open the target's plan page and request "
                "approval again.")
    if request.status == RequestStatus.EXPIRED:
        return "This request expired before it ran. Request approval again from the plan page."
    if request.status in REQUEST_PENDING and request.note:
        return request.note
    return None
