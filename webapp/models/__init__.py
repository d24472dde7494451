"""The dashboard's own tables, one module per area; every name is importable
from here (``from webapp.models import Job``).

The schema is migrated by Alembic from ``migrations/`` (never ``create_all``).

- :mod:`.accounts`: users, API tokens, login failures and rate-limit counters (throttling)
- :mod:`.jobs`: jobs and their states, target guards, applied revisions, rehearsals
- :mod:`.audit`: audit events
- :mod:`.approvals`: approval requests, approvals, review ticks and comment threads
- :mod:`.rollouts`: fleet rollouts and their steps
- :mod:`.changelog`: each target's changelog entries and schema snapshots
- :mod:`.journal`: the statements a job ran where DDL is not transactional
"""

from __future__ import annotations

from ..extensions import db
from .accounts import ROLES, ApiToken, LoginFailure, RateLimitCounter, User
from .approvals import (
    REQUEST_PENDING,
    Approval,
    ApprovalRequest,
    CommentKind,
    RequestComment,
    RequestStatus,
    RequestView,
)
from .audit import AuditEvent
from .changelog import ChangelogEntry, SchemaSnapshot
from .clock import utcnow
from .jobs import JOB_ACTIVE, AppliedRevision, Job, JobStatus, Rehearsal, TargetGuard
from .journal import JobStatement
from .rollouts import (
    ROLLOUT_ACTIVE,
    STEP_IN_FLIGHT,
    Rollout,
    RolloutStatus,
    RolloutStep,
    StepStatus,
)

__all__ = [
    "JOB_ACTIVE", "REQUEST_PENDING", "ROLES", "ROLLOUT_ACTIVE", "STEP_IN_FLIGHT",
    "ApiToken", "AppliedRevision", "Approval", "ApprovalRequest", "AuditEvent",
    "ChangelogEntry", "CommentKind", "Job", "JobStatement", "JobStatus", "LoginFailure",
    "RateLimitCounter",
    "Rehearsal", "RequestComment", "RequestStatus", "RequestView", "Rollout", "RolloutStatus",
    "RolloutStep", "SchemaSnapshot", "StepStatus", "TargetGuard", "User", "db", "utcnow",
]
