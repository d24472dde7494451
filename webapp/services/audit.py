"""Audit log: who did what, when, from where, on which target, with what outcome.

Append-only through the app: this module only inserts and reads. Details
are JSON; callers never put URLs or passwords in them (and :func:`record`
scrubs anything that looks like a URL with credentials).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from ..extensions import db
from ..models import AuditEvent

_CREDENTIALS_RE = re.compile(r"(\w+(?:\+\w+)?://[^:/@\s]*:)[^@\s]*@")


@dataclass(frozen=True)
class Actor:
    """Who acts: ``username`` (None for anonymous) and ``address`` (client IP);
    for a single sign-on account ``issuer`` and ``subject`` (the identity
    provider's ``iss`` and ``sub``); ``granted_by`` the grants that allowed
    the action (see :meth:`granted`). Events recorded for an actor carry the
    last two in their details (``identity``, ``granted_by``)."""

    username: str | None
    address: str | None = None
    issuer: str | None = None
    subject: str | None = None
    granted_by: tuple[str, ...] = ()

    @classmethod
    def of(cls, user, address: str | None) -> Actor:
        """The actor for an account (a :class:`~webapp.models.User`) at
        ``address``; anonymous (username None) for one not logged in."""
        return cls(getattr(user, "username", None), address, getattr(user, "oidc_issuer", None),
                   getattr(user, "oidc_subject", None))

    def granted(self, granted_by: list[str]) -> Actor:
        """This actor, with the grants that allow what it does next."""
        return replace(self, granted_by=tuple(granted_by))


SYSTEM = Actor("system", "local")


def _scrub(value):
    if isinstance(value, str):
        return _CREDENTIALS_RE.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def record(actor: Actor, action: str, outcome: str, *, target: str | None = None,
           job_id: int | None = None, commit: bool = True, **details) -> AuditEvent:
    """Append one event.

    :param action: dotted name, e.g. ``login``, ``job.confirm``, ``job.end``.
    :param outcome: ``ok``, ``denied``, ``failed``, ``succeeded``, ...
    :param details: JSON-serialisable facts (credentials in URLs are masked);
        ``identity`` and ``granted_by`` are added from ``actor``.
    """
    if actor.subject and "identity" not in details:
        details["identity"] = {"iss": actor.issuer, "sub": actor.subject}
    if actor.granted_by and "granted_by" not in details:
        details["granted_by"] = list(actor.granted_by)
    event = AuditEvent(username=actor.username, client_address=(actor.address or "")[:64],
                       action=action[:48], outcome=outcome[:16], target=target,
                       job_id=job_id, details=json.dumps(_scrub(details), default=str))
    db.session.add(event)
    if commit:
        db.session.commit()
    return event


def query(*, username: str | None = None, target: str | None = None,
          action: str | None = None, since: datetime | None = None,
          until: datetime | None = None, outcome: str | None = None,
          before: int | None = None, limit: int = 500) -> list[AuditEvent]:
    """Events newest first, filtered; ``action`` matches a prefix (``job``
    matches ``job.start``); ``since``/``until`` are UTC; ``before`` keeps the
    events older than that event id (the next page, newest first)."""
    stmt = db.select(AuditEvent).order_by(AuditEvent.id.desc())
    if outcome:
        stmt = stmt.where(AuditEvent.outcome == outcome)
    if before:
        stmt = stmt.where(AuditEvent.id < before)
    if username:
        stmt = stmt.where(AuditEvent.username == username)
    if target:
        stmt = stmt.where(AuditEvent.target == target)
    if action:
        stmt = stmt.where(db.or_(AuditEvent.action == action,
                                 AuditEvent.action.startswith(action + ".")))
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    return list(db.session.execute(stmt.limit(limit)).scalars())


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def known_values() -> dict[str, list[str]]:
    """What the audit log holds, for its filters: ``{"actions": the action
    families and actions (``job``, ``job.end``, ...), "outcomes", "users"}``,
    each sorted, from the dashboard database."""
    actions = set(db.session.execute(db.select(AuditEvent.action).distinct()).scalars())
    families = {a.split(".", 1)[0] for a in actions}
    outcomes = db.session.execute(db.select(AuditEvent.outcome).distinct()).scalars()
    users = db.session.execute(db.select(AuditEvent.username).distinct()
                               .where(AuditEvent.username.is_not(None))).scalars()
    return {"actions": sorted(actions | families), "outcomes": sorted(set(outcomes)),
            "users": sorted(set(users))}


def csv_safe(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula (OWASP CSV injection):
    text starting with ``= + - @``, tab, CR or LF gets a leading ``'``.
    Other values are returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(events: Iterable[AuditEvent]) -> str:
    """CSV text with a header row: id, at (UTC ISO), user, address, action,
    outcome, target, job, details. Text that a spreadsheet would read as a
    formula is neutralised (:func:`csv_safe`); fields with separators,
    quotes or line breaks are quoted by :mod:`csv`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at_utc", "user", "client_address", "action", "outcome", "target",
                     "job", "details"])
    for e in events:
        writer.writerow([csv_safe(v) for v in (
            e.id, e.at.isoformat(timespec="seconds"), e.username or "", e.client_address or "",
            e.action, e.outcome, e.target or "", e.job_id or "", e.details)])
    return out.getvalue()
