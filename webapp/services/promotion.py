"""Promotion from staging: an upgrade on a target whose policy names
``promote_from`` runs only what already ran there.

Every revision an upgrade plan applies must be applied on the
``promote_from`` target with the same file (the SHA-256 the dashboard kept
when a job applied it there, :class:`~webapp.models.AppliedRevision`,
equals the plan step's); with ``promote_requires_rehearsal`` /
``promote_requires_stairway`` a passing rehearsal / stairway test of this
exact plan (its hash) on this target must exist too. Downgrades and stamps
are not gated. Read-only: everything comes from the dashboard database.

:func:`evidence` is what the plan and request pages show;
:func:`check` refuses (:attr:`Reason.NOT_PROMOTED`, a 409) when it falls
short, called by :func:`webapp.services.submission.submit` and again when an
approved request's job starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..core.plan import Plan
from ..core.targets import Target
from ..extensions import db
from ..models import AppliedRevision, Rehearsal
from . import rehearsals
from .refusals import Reason, Refused


@dataclass(frozen=True)
class StepEvidence:
    """One revision of the plan on the ``promote_from`` target: ``applied``
    there (a job recorded its file), by job ``job`` (id or None) at
    ``applied_at`` (UTC), and whether with the ``same_file`` (SHA-256 equal)."""

    revision: str
    applied: bool
    same_file: bool
    job: int | None = None
    applied_at: datetime | None = None


@dataclass(frozen=True)
class Evidence:
    """What promotes (or not) one upgrade plan to ``target`` from ``source``.

    ``steps``: one :class:`StepEvidence` per revision the plan applies;
    ``rehearsal`` / ``stairway``: the newest of this plan on the target (or
    None), and whether the policy requires it (``needs_rehearsal``,
    ``needs_stairway``); ``problems``: why the plan may not be requested or
    run yet, one sentence each (empty: promoted).
    """

    target: str
    source: str
    steps: list[StepEvidence]
    rehearsal: Rehearsal | None
    stairway: Rehearsal | None
    needs_rehearsal: bool
    needs_stairway: bool
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing stands in the way."""
        return not self.problems


def evidence(target: Target, plan: Plan) -> Evidence | None:
    """The promotion evidence of ``plan`` on ``target``, or None when not
    gated: no ``promote_from`` in its policy, or not an upgrade."""
    policy = target.policy
    source = policy.promote_from
    if source is None or plan.command != "upgrade":
        return None
    revisions = [s.revision for s in plan.steps if s.direction == "upgrade"]
    rows = {row.revision: row for row in db.session.scalars(db.select(AppliedRevision).where(
        AppliedRevision.target == source, AppliedRevision.revision.in_(revisions)))
        } if revisions else {}
    steps, problems = [], []
    for step in plan.steps:
        if step.direction != "upgrade":
            continue
        row = rows.get(step.revision)
        same = bool(row and step.sha256 and row.sha256 == step.sha256)
        steps.append(StepEvidence(step.revision, row is not None, same,
                                  row.job_id if row else None, row.applied_at if row else None))
        if row is None:
            problems.append(f"revision {step.revision} is not applied on {source} yet: "
                            f"upgrade {source} first")
        elif not same:
            problems.append(f"revision {step.revision} was applied on {source} with a "
                            "different file: the file changed since, so run the changed "
                            f"revision on {source} first")
    rehearsal = rehearsals.latest_for(target.name, plan)
    stairway = rehearsals.latest_for(target.name, plan, "stairway")
    for needed, row, what in ((policy.promote_requires_rehearsal, rehearsal, "rehearsal"),
                              (policy.promote_requires_stairway, stairway, "stairway test")):
        if needed and row is None:
            problems.append(f"{target.name} requires a passing {what} of this exact plan: "
                            "none was run")
        elif needed and not row.passed:
            problems.append(f"{target.name} requires a passing {what} of this exact plan: "
                            f"the last one failed")
    return Evidence(target.name, source, steps, rehearsal, stairway,
                    policy.promote_requires_rehearsal, policy.promote_requires_stairway,
                    problems)


def check(target: Target, plan: Plan) -> None:
    """Refuse ``plan`` on ``target`` unless promoted (see :func:`evidence`).

    :raises Refused: :attr:`Reason.NOT_PROMOTED` (409), the message naming
        the source target and every problem.
    """
    found = evidence(target, plan)
    if found is not None and not found.ok:
        raise Refused(Reason.NOT_PROMOTED, f"{target.name} is promoted from {found.source}: "
                      + "; ".join(found.problems))
