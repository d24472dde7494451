"""Lint severity per tier, as a gate: a tier whose ``[tiers.<tier>.lint]``
table says ``block_on_error = true`` refuses plans with an error-level
finding on its targets (the levels themselves are applied when the plan is
computed: :meth:`webapp.core.targets.LintPolicy.apply`).

Called by :func:`webapp.services.submission.submit` (request creation and
job start) and again when an approved request's job starts; the plan and
request pages show :func:`blocking`. Reads nothing but the plan.
"""

from __future__ import annotations

from ..core.plan import Plan
from ..core.targets import Target
from .refusals import Reason, Refused


def blocking(target: Target, plan: Plan) -> list[dict]:
    """The error-level findings of ``plan`` (dicts: ``rule``, ``revision``,
    ``statement``, ``why``, ``level``) when ``target``'s tier blocks on
    them, else []."""
    return target.lint.blocking(plan.findings)


def check(target: Target, plan: Plan) -> None:
    """Refuse ``plan`` on ``target`` when its tier blocks on lint errors and
    the plan has one.

    :raises Refused: :attr:`Reason.LINT_BLOCKED` (409), naming each rule and
        revision.
    """
    errors = blocking(target, plan)
    if errors:
        listed = "; ".join(f"{f['rule']} in revision {f.get('revision') or '?'} "
                           f"({f.get('statement', '')[:120]})" for f in errors)
        raise Refused(Reason.LINT_BLOCKED, f"The {target.tier} tier blocks plans with lint "
                      f"errors ([tiers.{target.tier}.lint] block_on_error): {listed}. "
                      "Change the revisions, or ask an admin to change the tier's lint levels")
