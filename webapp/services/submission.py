"""Submission: the one way in for a migration, above approvals and jobs.

The plan page's confirm form, the request form, the API and fleet rollouts
all call :func:`submit`. On an unprotected target it starts a job
(:func:`webapp.services.jobs.start_job`); on a protected one it stores an
approval request (:func:`webapp.services.approvals.create_request`), whose
approval starts the job. Neither of those modules imports this one.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.targets import Target
from ..models import ApprovalRequest, Job, User
from . import approvals, audit, authorization, jobs, lint_gate, promotion, recovery
from .catalog import Catalog
from .jobs import JobRequest
from .refusals import Reason, Refused, approvals_text

__all__ = ["JobRequest", "Submission", "submit"]


@dataclass
class Submission:
    """What :func:`submit` did: started ``job``, or stored ``request`` for approval."""

    job: Job | None = None
    request: ApprovalRequest | None = None


def submit(catalog: Catalog, user: User, request: JobRequest, actor: audit.Actor, *,
           confirmed_hash: str | None = None, reason: str = "",
           fast_plan: bool = False, asks_for: str | None = None) -> Submission:
    """Submit ``alembic command revision`` on a target: the one entry point.

    Checks the role and policy, computes the plan from the database's current
    state (for a resume job, ``request.resume_of``, the failed job's journal
    too: :func:`webapp.services.recovery.plan_resume`) and then starts the
    job (unprotected target) or stores a request for approval (protected
    target; ``reason`` is shown to the approvers).

    :param confirmed_hash: the plan hash the person saw; a different plan now
        is refused (:attr:`Reason.PLAN_CHANGED`).
    :param fast_plan: for pipelines on unprotected targets: pin the steps and
        checksums without rendering offline SQL first (:func:`jobs.quick_upgrade_plan`).
    :param asks_for: ``"job"`` (a page's confirm button) or ``"request"`` (its
        request form): refused (policy) before anything else when the target's
        protection says otherwise; None (the API) takes what the target gives.
    :raises Refused: role, policy, bad input, unknown revision, missing
        database, nothing to do, not promoted (``promote_from``: see
        :mod:`webapp.services.promotion`), lint errors on a blocking tier
        (:mod:`webapp.services.lint_gate`), plan changed, busy, unreachable...
    """
    target = request.target
    _check_asks_for(target, asks_for)
    actor = actor.granted(authorization.authorize(user, target, request.command))
    plan = None
    # approvers must see the SQL, and a tier blocking on lint errors must lint it
    if fast_plan and not target.policy.is_protected and not target.lint.block_on_error \
            and request.resume_of is None:
        plan = jobs.quick_upgrade_plan(catalog, request)
    if plan is None:
        plan = recovery.plan_for(catalog, request)  # a resume job's plan skips what took effect
    if plan.is_empty:
        raise Refused(Reason.NOTHING_TO_DO, catalog.nothing_to_do(target, plan.current_before))
    promotion.check(target, plan)  # promote_from: applied there first (and rehearsed)
    lint_gate.check(target, plan)  # [tiers.<tier>.lint] block_on_error
    if target.policy.is_protected:
        return Submission(request=approvals.create_request(
            catalog, user, request, plan, reason, actor, confirmed_hash=confirmed_hash))
    return Submission(job=jobs.start_job(catalog, user, request, plan, actor,
                                         confirmed_hash=confirmed_hash))


def _check_asks_for(target: Target, asks_for: str | None) -> None:
    """:raises Refused: policy, a direct job on a protected target or a
    request on one that is not (see :func:`submit`)."""
    if asks_for == "job" and target.policy.is_protected:
        raise Refused(Reason.POLICY, f"{target.name} is protected: its jobs need "
                      f"{approvals_text(target.policy.approvals_required)}. Request "
                      "approval from the plan page.")
    if asks_for == "request" and not target.policy.is_protected:
        raise Refused(Reason.POLICY, f"{target.name} is not protected: run the plan directly.")
