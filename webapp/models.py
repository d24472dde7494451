"""The dashboard's own tables (users, API tokens).

The schema is migrated by Alembic from ``migrations/`` (never ``create_all``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

# "none": only what per-target grants give (see webapp.core.permissions)
ROLES = ("none", "viewer", "operator", "approver", "admin")


def utcnow() -> datetime:
    """Current time in UTC, timezone-naive (stored as UTC in every dialect)."""
    return datetime.now(UTC).replace(tzinfo=None)


class User(UserMixin, db.Model):
    """An account. ``role`` is one of :data:`ROLES` (ordered by power), the
    global role; ``groups`` is a JSON list of group names (per-target grants
    ``group:<name>``), set by ``flask set-groups`` or from the identity
    provider's claim at each single sign-on. ``oidc_issuer``/``oidc_subject``
    identify an account made by single sign-on (its ``password_hash`` is empty).
    """

    __tablename__ = "users"
    __table_args__ = (db.UniqueConstraint("oidc_issuer", "oidc_subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="viewer")
    is_active_flag: Mapped[bool] = mapped_column("is_active", default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    failed_login_count: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failed_login_at: Mapped[datetime | None]
    # bumped on logout, password change, role change and disable: every
    # session cookie carrying an older value stops working (see get_id)
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    groups_json: Mapped[str | None] = mapped_column("groups", Text, default="[]")  # None = []
    oidc_issuer: Mapped[str | None] = mapped_column(String(255))
    oidc_subject: Mapped[str | None] = mapped_column(String(255))

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user",
                                                  cascade="all, delete-orphan")

    @property
    def is_active(self) -> bool:  # Flask-Login: inactive users cannot log in
        return self.is_active_flag

    def get_id(self) -> str:
        """Flask-Login's session id: ``"<id>:<session_version>"``, so a bumped
        version logs every existing session out."""
        return f"{self.id}:{self.session_version}"

    def has_role(self, minimum: str) -> bool:
        """True when this user's role is ``minimum`` or above.

        Order: viewer < operator < approver < admin.
        """
        return ROLES.index(self.role) >= ROLES.index(minimum)

    @property
    def groups(self) -> list[str]:
        """The group names stored for this account (``groups`` decoded)."""
        import json

        value = json.loads(self.groups_json or "[]")
        return [g for g in value if isinstance(g, str)] if isinstance(value, list) else []


class ApiToken(db.Model):
    """A bearer token for the API. Only its SHA-256 is stored; ``prefix`` (the
    first 8 characters) helps a person tell tokens apart."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="tokens")

    @staticmethod
    def hash_token(token: str) -> str:
        """SHA-256 hex digest of a token (tokens are random, 256 bits: no salt needed)."""
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LoginFailure(db.Model):
    """Failed logins per submitted username (known or not, so the lockout
    answers alike for both); updated with single atomic UPDATEs."""

    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0, server_default="0")
    last_failed_at: Mapped[datetime] = mapped_column(index=True)


class JobStatus(StrEnum):
    """A job's state: queued → running → succeeded | failed | abandoned.
    A finished state never changes again."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"


JOB_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(db.Model):
    """One run of an Alembic command against a target.

    ``from_revisions``/``to_revisions``/``applied_revisions`` are
    space-separated revision ids (empty = base); ``log`` is everything the
    command printed (Alembic's output, env.py's logging, the traceback).
    ``plan_hash`` pins the job to the plan the user confirmed.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    plan_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    from_revisions: Mapped[str] = mapped_column(String(1000), default="")
    to_revisions: Mapped[str | None] = mapped_column(String(1000))
    planned_revisions: Mapped[str] = mapped_column(Text, default="")
    applied_revisions: Mapped[str] = mapped_column(Text, default="")
    failed_revision: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str] = mapped_column(Text().with_variant(LONGTEXT(), "mysql", "mariadb"),
                                     default="")
    dialect: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker_pid: Mapped[int | None]
    worker_host: Mapped[str | None] = mapped_column(String(255))
    # which process worker_pid is: "<boot id>:<start time in clock ticks>" (Linux)
    worker_start: Mapped[str | None] = mapped_column(String(64))

    user: Mapped[User | None] = relationship()

    @property
    def is_active(self) -> bool:
        """True while queued or running."""
        return self.status in JOB_ACTIVE

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (or to now while running); None before start."""
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return (end - self.started_at).total_seconds()

    @staticmethod
    def split(value: str | None) -> list[str]:
        """Revision ids stored space-separated → list."""
        return value.split() if value else []


class TargetGuard(db.Model):
    """The dashboard-side half of "one job per target": a row exists while a
    job holds the target. Its primary key makes a second insert fail, in every
    dashboard process on every host sharing this database."""

    __tablename__ = "target_guards"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(db.Model):
    """An append-only record of an action or a denied attempt.

    ``details`` is JSON text; it never contains a database URL or password.
    It carries ``identity`` (the identity provider's ``iss`` and ``sub``) for
    single sign-on users and ``granted_by`` (which grants allowed the action).
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str | None] = mapped_column(String(64), index=True)
    client_address: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(48), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(64), index=True)
    job_id: Mapped[int | None]
    details: Mapped[str] = mapped_column(Text, default="{}")

    @property
    def details_dict(self) -> dict:
        """``details`` decoded ({} when unreadable)."""
        import json

        try:
            value = json.loads(self.details or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class RequestStatus(StrEnum):
    """An approval request's state: open → approved → executed, or rejected,
    withdrawn, expired."""

    OPEN = "open"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    EXECUTED = "executed"


REQUEST_PENDING = (RequestStatus.OPEN, RequestStatus.APPROVED)  # not yet run or ended


class ApprovalRequest(db.Model):
    """A job awaiting approval on a protected target.

    ``plan`` is the JSON of the plan that was requested (current revisions,
    steps with each revision file's SHA-256, offline SQL, warnings);
    ``plan_hash`` pins approvals to it. ``status``: open → approved →
    executed, or rejected / withdrawn / expired.
    """

    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    requester_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.OPEN, index=True)
    plan_hash: Mapped[str] = mapped_column(String(64))
    plan: Mapped[str] = mapped_column(Text().with_variant(LONGTEXT(), "mysql", "mariadb"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)

    requester: Mapped[User | None] = relationship()
    approvals: Mapped[list[Approval]] = relationship(back_populates="request",
                                                     cascade="all, delete-orphan",
                                                     order_by="Approval.id")


class Approval(db.Model):
    """One approver's decision on a request, pinned to the plan hash it saw.

    ``void`` is set when the plan changed after this approval was given.
    """

    __tablename__ = "approvals"
    __table_args__ = (db.UniqueConstraint("request_id", "approver_id", "plan_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), index=True)
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject
    comment: Mapped[str] = mapped_column(Text, default="")
    plan_hash: Mapped[str] = mapped_column(String(64))
    void: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    request: Mapped[ApprovalRequest] = relationship(back_populates="approvals")
    approver: Mapped[User | None] = relationship()


class AppliedRevision(db.Model):
    """SHA-256 of a revision file at the time a job applied it to a target."""

    __tablename__ = "applied_revisions"

    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    revision: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1000))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)


class Rehearsal(db.Model):
    """A dry run of a plan on a scratch copy of the target's schema.

    ``plan_hash`` ties it to the plan it rehearsed (shown on that plan and on
    requests for it); ``result`` is the agent's JSON: ``passed``, ``steps``
    (revision, seconds), ``seconds``, ``failed_revision``,
    ``failing_statement``, ``error``, ``copy`` (what the copy was).
    """

    __tablename__ = "rehearsals"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    plan_hash: Mapped[str] = mapped_column(String(64), index=True)
    passed: Mapped[bool]
    result: Mapped[str] = mapped_column(Text().with_variant(LONGTEXT(), "mysql", "mariadb"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User | None] = relationship()

    @property
    def details(self) -> dict:
        """``result`` decoded."""
        import json

        return json.loads(self.result)


class RolloutStatus(StrEnum):
    """A fleet rollout's state: running ⇄ paused → succeeded | failed |
    cancelled. A finished state never changes again."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ROLLOUT_ACTIVE = (RolloutStatus.RUNNING, RolloutStatus.PAUSED)


class StepStatus(StrEnum):
    """One target's part of a rollout: pending → starting → running (a job)
    or awaiting_approval (a request on a protected target) → succeeded |
    failed; skipped when the database was already there; not_run when the
    rollout stopped (failure, cancel) before the step started."""

    PENDING = "pending"
    STARTING = "starting"
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    FAILED = "failed"
    NOT_RUN = "not_run"


STEP_IN_FLIGHT = (StepStatus.STARTING, StepStatus.AWAITING_APPROVAL, StepStatus.RUNNING)


class Rollout(db.Model):
    """One command (``command revision``) rolled out over many targets in waves.

    ``selection`` is the JSON of the selection (tier / tag / targets lists);
    at most ``concurrency`` steps are in flight at once; the next wave starts
    when every step of the current one has ended. ``lease_token`` /
    ``lease_until`` / ``dirty`` serialise advancers across processes and hosts
    (see :mod:`webapp.services.rollout_advance`).
    """

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(primary_key=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RolloutStatus.RUNNING, index=True)
    concurrency: Mapped[int] = mapped_column(default=1)
    batch_size: Mapped[int | None]
    stop_on_failure: Mapped[bool] = mapped_column(default=True)
    selection: Mapped[str] = mapped_column(Text, default="{}")
    reason: Mapped[str] = mapped_column(Text, default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None]
    dirty: Mapped[bool] = mapped_column(default=False)

    user: Mapped[User | None] = relationship()
    steps: Mapped[list[RolloutStep]] = relationship(
        back_populates="rollout", cascade="all, delete-orphan",
        order_by="(RolloutStep.wave, RolloutStep.position)")

    @property
    def is_active(self) -> bool:
        """True while running or paused."""
        return self.status in ROLLOUT_ACTIVE


class RolloutStep(db.Model):
    """One target of a rollout: its wave, its state, and the job (or the
    approval request) that carries it out. ``note`` says why it failed,
    was skipped or did not run."""

    __tablename__ = "rollout_steps"
    __table_args__ = (db.UniqueConstraint("rollout_id", "target"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"),
                                            index=True)
    wave: Mapped[int]
    position: Mapped[int]
    target: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(24), default=StepStatus.PENDING, index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               index=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="SET NULL"), index=True)
    note: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    rollout: Mapped[Rollout] = relationship(back_populates="steps")
    job: Mapped[Job | None] = relationship()
    request: Mapped[ApprovalRequest | None] = relationship()
