"""Who hears of a request by mail: its eligible approvers when it is
created or gets a new plan, its requester when an approver requests
changes. Only people with an email address on their account get one; a
short plain-text mail with the link to the request (when the event came
from a web request, whose host names the link).

Subscribed once by ``create_app`` to
:data:`webapp.services.events.request_waiting` (so approvals and new plans
never depend on mail); sending is :mod:`webapp.services.mail`'s background
thread, so a mail never blocks or fails the request.
"""

from __future__ import annotations

from flask import current_app, has_request_context, url_for

from ..models import ApprovalRequest, User
from . import accounts, events, mail
from .approvals import eligible_approvers
from .catalog import Catalog


def subscribe() -> None:
    """Connect the receiver to :data:`~webapp.services.events.request_waiting`
    (called by ``create_app``; blinker connects a receiver once)."""
    events.request_waiting.connect(_on_request_waiting, weak=False)


def request_link(request: ApprovalRequest) -> str | None:
    """The request page's absolute URL, or None outside a web request (no
    host to name)."""
    if not has_request_context():
        return None
    return url_for("requests.show", request_id=request.id, _external=True)


def _addresses(users: list[User]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(u.email for u in users if u.email and u.is_active))


def approvers_mail(catalog: Catalog, request: ApprovalRequest, *,
                   new_plan: bool = False) -> mail.Mail:
    """The mail to ``request``'s eligible approvers that have an address: it
    waits for their decision (just created, or ``new_plan`` submitted)."""
    names = set(eligible_approvers(catalog, request))
    users = [u for u in accounts.list_users() if u.username in names]
    requester = request.requester.username if request.requester else "someone"
    what = "submitted a new plan for" if new_plan else "requests approval of"
    body = [f"{requester} {what} request {request.id} on {request.target}:",
            f"    alembic {request.command} {request.revision}",
            f"Reason: {request.reason}", "",
            "Review its revisions and decide:"]
    return mail.Mail(to=_addresses(users), target=request.target, event="request.waiting",
                     subject=f"[alembic-dashboard] request {request.id} on {request.target} "
                             "awaits your approval",
                     body=_with_link(body, request))


def requester_mail(request: ApprovalRequest, by: str, comment: str) -> mail.Mail:
    """The mail to ``request``'s requester (when they have an address): the
    approver ``by`` requested changes, saying ``comment``."""
    to = _addresses([request.requester] if request.requester else [])
    body = [f"{by} requested changes on request {request.id} on {request.target} "
            f"(alembic {request.command} {request.revision}):",
            f"    {comment}", "",
            "Change the revision files, then submit the new plan on the request page:"]
    return mail.Mail(to=to, target=request.target, event="request.changes_requested",
                     subject=f"[alembic-dashboard] changes requested on request "
                             f"{request.id} on {request.target}",
                     body=_with_link(body, request))


def _with_link(lines: list[str], request: ApprovalRequest) -> str:
    link = request_link(request)
    return "\n".join([*lines, link or f"(the dashboard's Requests page, request {request.id})",
                      ""])


def _on_request_waiting(request: ApprovalRequest, *, catalog: Catalog, waits_for: str,
                        by: str = "", comment: str = "", new_plan: bool = False,
                        **_) -> None:
    """Queue the mail for whom ``request`` now waits; never raises (the
    request is already committed)."""
    try:
        if not mail.configured(current_app):
            return
        if waits_for == "requester":
            mail.send(requester_mail(request, by, comment))
        else:
            mail.send(approvers_mail(catalog, request, new_plan=new_plan))
    except Exception as exc:  # noqa: BLE001 - a mail must never fail the request
        print(f"request mail not queued: {type(exc).__name__}: {exc}", flush=True)
