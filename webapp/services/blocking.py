"""Who blocks a running job's migration, and the admin's cancel of one blocker.

The sessions come from the agent's blocked-by watch (see
:attr:`webapp.models.Job.blockers`); cancelling one goes through the agent
too (:func:`webapp.core.runner.cancel_blocker`), which cancels the query only
if that session blocks the migration at that moment.
"""

from __future__ import annotations

from ..core.permissions import Role
from ..core.runner import TargetProcessError, cancel_blocker
from ..core.targets import TargetUrlMissing
from ..models import JobStatus
from . import accounts, audit
from .catalog import Catalog
from .jobs import get_job
from .refusals import Reason, Refused, needs_role


def cancel_blocking_query(catalog: Catalog, job_id: int, pid: int, user,
                          actor: audit.Actor) -> dict:
    """Cancel the current query of session ``pid``, which blocks running job
    ``job_id`` (``pg_cancel_backend`` / ``KILL QUERY``), audited as
    ``job.cancel_blocker`` with the session's user, state and redacted query.

    Checked here: the user is an admin on the job's target, the job is
    running, ``pid`` is among the sessions its pane shows now; and by the
    agent on the database: ``pid`` blocks the migration's session now.

    :return: ``{"pid", "cancelled": True}``.
    :raises Refused: not_found (no such job, or one on a target the user may
        not see), role (admin needed), not_open
        (the job is not running, or ``pid`` does not block it now),
        unreachable (the database or its URL).
    """
    job = get_job(job_id)
    target = catalog.get(job.target) if job is not None else None
    if job is None or target is None:
        raise Refused(Reason.NOT_FOUND, f"There is no job {job_id}.")
    access = accounts.access_on(user, target)
    if not access.allows(Role.VIEWER):  # answered as pages answer it: no such job
        raise Refused(Reason.NOT_FOUND, f"There is no job {job_id}.")
    if not access.allows(Role.ADMIN):
        raise needs_role(f"Cancelling a query that blocks a job on {job.target}", "admin",
                         access.role.label)
    blocked = job.blocked or {}
    blocker = next((b for b in blocked.get("blockers") or [] if b.get("pid") == pid), None)
    if job.status != JobStatus.RUNNING or blocker is None or blocked.get("session") is None:
        raise Refused(Reason.NOT_OPEN, f"Session {pid} does not block job {job_id} now "
                      f"(the job is {job.status}): nothing was cancelled.")
    try:
        done = cancel_blocker(target, url=catalog.database_url(target),
                              session=int(blocked["session"]), pid=pid)
    except (TargetProcessError, TargetUrlMissing) as exc:
        raise Refused(Reason.UNREACHABLE, f"The database cannot be reached: {exc}") from None
    facts = {"pid": pid, "session_user": blocker.get("user"), "state": blocker.get("state"),
             "query": blocker.get("query")}
    if not done.get("blocking"):
        raise Refused(Reason.NOT_OPEN, f"Session {pid} no longer blocks job {job_id}: "
                      "nothing was cancelled.")
    audit.record(actor.granted(access.granted_by(Role.ADMIN)), "job.cancel_blocker",
                 "ok" if done.get("cancelled") else "failed", target=job.target,
                 job_id=job.id, **facts)
    return {"pid": pid, "cancelled": bool(done.get("cancelled"))}
