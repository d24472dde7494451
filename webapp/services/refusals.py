"""Typed refusals: why the dashboard will not do what was asked.

Services raise :class:`Refused` with a :class:`Reason`; only the web layer
(:func:`webapp.views.common.http_status`) turns a reason into an HTTP status. The
reason's value is the ``error`` field of the API's JSON answer.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why something was refused (the API's ``error`` string)."""

    ROLE = "role"                          # the user's role is too low
    POLICY = "policy"                      # the target's policy forbids it
    SELF_APPROVAL = "self_approval"        # requesters never approve their own request
    BAD_INPUT = "bad_input"                # malformed or out-of-range input
    NOT_FOUND = "not_found"                # no such target, job or request
    UNKNOWN_REVISION = "unknown_revision"  # not a revision of this target
    BUSY = "busy"                          # another job holds the target
    PLAN_CHANGED = "plan_changed"          # the database or files moved since the plan
    NOTHING_TO_DO = "nothing_to_do"        # the database is already there
    NOT_OPEN = "not_open"                  # the request is no longer open
    ALREADY_DECIDED = "already_decided"    # this approver decided already
    NOT_REVIEWED = "not_reviewed"          # approving before every revision was viewed
    PLAN_UNCHANGED = "plan_unchanged"      # a "new" plan that is the one already reviewed
    SCRIPT_DIRECTORY = "script_directory"  # the revision files cannot be read
    PLAN_ERROR = "plan_error"              # Alembic refuses the command (e.g. multiple heads)
    PLAN_FAILED = "plan_failed"            # env.py or a revision failed while planning
    DATABASE_MISSING = "database_missing"  # a SQLite file that does not exist
    UNREACHABLE = "unreachable"            # the database cannot be reached
    UNSUPPORTED = "unsupported"            # the target cannot do this (e.g. rehearse a Flask app)
    NOT_PROMOTED = "not_promoted"          # not yet applied on / rehearsed for promote_from
    LINT_BLOCKED = "lint_blocked"          # an error-level lint finding on a blocking tier


class Refused(Exception):
    """A refusal: ``reason`` (a :class:`Reason`), a message for a person, and
    ``job_id`` naming the running job when ``reason`` is :attr:`Reason.BUSY`."""

    def __init__(self, reason: Reason, message: str, job_id: int | None = None) -> None:
        self.reason, self.job_id = reason, job_id
        super().__init__(message)


def approvals_text(count: int) -> str:
    """``"1 approval"``, ``"2 approvals"``: for messages about a target's policy."""
    return f"{count} approval" + ("" if count == 1 else "s")


def needs_role(doing: str, needed: str, role: str) -> Refused:
    """The refusal (:attr:`Reason.ROLE`) of ``doing`` for a user whose role is
    too low: ``needs_role("Running migrations on shop", "operator", "viewer")``
    says "Running migrations on shop needs the operator role; your role there
    is viewer." — the one wording of these messages.

    :param doing: what was refused, as the start of a sentence.
    :param needed: the role label it needs (``operator``, ``admin``...).
    :param role: the user's role label there.
    """
    return Refused(Reason.ROLE, f"{doing} needs the {needed} role; your role there is {role}.")
