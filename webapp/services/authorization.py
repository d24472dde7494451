"""Who may run what on a target: the server-side rules every job passes.

Used when a migration is asked for (:func:`authorize`, by
:mod:`webapp.services.submission`, rehearsals and rollouts) and again when it
runs as someone who asked earlier (:func:`authorize_run_as`: an approved
request's requester, a rollout's creator, a queued job's user), so a user
demoted or disabled in between runs nothing. Below jobs, approvals and the
job process: it imports none of them.
"""

from __future__ import annotations

from ..core.permissions import Role
from ..core.targets import Target
from ..models import User
from . import accounts
from .refusals import Reason, Refused, needs_role


def authorize(user: User, target: Target, command: str) -> list[str]:
    """Server-side role and policy checks for running ``command`` on ``target``,
    with the user's effective role there (:func:`accounts.access_on`).

    On a protected target passing these checks allows a *request*; the job
    itself needs approvals (see :mod:`webapp.services.approvals`).

    :return: the grants that allow it (for the audit log), e.g.
        ``["group:dba on target shop-prod (approver)"]``.
    :raises Refused: :attr:`Reason.ROLE` or :attr:`Reason.POLICY`.
    """
    access = accounts.access_on(user, target)
    if not access.allows(Role.OPERATOR):
        raise needs_role(f"Running migrations on {target.name}", "operator", access.role.label)
    if command == "stamp" and not access.allows(Role.ADMIN):
        raise Refused(Reason.ROLE, "stamp needs the admin role: it rewrites the version "
                      "table without running migrations.")
    if command == "downgrade" and not target.policy.allow_downgrade:
        raise Refused(Reason.POLICY, f"The policy of {target.name} does not allow "
                      "downgrades (allow_downgrade = false).")
    return access.granted_by(Role.ADMIN if command == "stamp" else Role.OPERATOR)


def authorize_run_as(user: User | None, target: Target, command: str, *, who: str) -> list[str]:
    """Whether a job may run *now* as ``user``, who asked for it earlier (an
    approval's requester, a rollout's creator, a queued job's user): the
    account still exists, is active, and is still allowed ``command`` on
    ``target`` by the rules a submission passes (:func:`authorize`:
    effective role and policy, as they are now).

    :param who: what ``user`` is to the job, for the message, e.g. ``"requester"``.
    :return: the grants that allow it (for the audit log).
    :raises Refused: :attr:`Reason.ROLE` (no such account, disabled, role too
        low now) or :attr:`Reason.POLICY`; the message names the account.
    """
    if user is None:
        raise Refused(Reason.ROLE, f"the {who} no longer has an account")
    if not user.is_active:
        raise Refused(Reason.ROLE, f"{user.username} (the {who}) is disabled: nothing runs "
                      "as a disabled account")
    try:
        return authorize(user, target, command)
    except Refused as exc:
        raise Refused(exc.reason, f"{user.username} (the {who}) may no longer run this: "
                      f"{str(exc).rstrip('.')}") from None
