"""Approval requests (a job awaiting approval) and the approvals given."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .accounts import User
from .clock import utcnow


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
