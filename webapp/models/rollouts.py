"""Fleet rollouts: one command rolled out over many targets in waves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .accounts import User
from .approvals import ApprovalRequest
from .clock import utcnow
from .jobs import Job


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
