"""Approval requests (a job awaiting approval) and the approvals given."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, false
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .accounts import User
from .clock import utcnow


class RequestStatus(StrEnum):
    """An approval request's state: open → approved → executed, or rejected,
    withdrawn, expired; open → changes_requested (an approver asked for
    changes) → open again when the requester submits a new plan."""

    OPEN = "open"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    EXECUTED = "executed"


# not yet run or ended (changes_requested waits for the requester's new plan)
REQUEST_PENDING = (RequestStatus.OPEN, RequestStatus.APPROVED, RequestStatus.CHANGES_REQUESTED)


class ApprovalRequest(db.Model):
    """A job awaiting approval on a protected target.

    ``plan`` is the JSON of the plan that was requested (current revisions,
    steps with each revision file's SHA-256, offline SQL, warnings);
    ``plan_hash`` pins approvals to it. ``status``: open → approved →
    executed, or rejected / withdrawn / expired, or changes_requested until
    the requester submits a new plan. ``comments`` is the request's thread
    (oldest first), ``views`` the approvers' viewed ticks.
    """

    __tablename__ = "approval_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    requester_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(32), default=RequestStatus.OPEN, index=True)
    plan_hash: Mapped[str] = mapped_column(String(64))
    plan: Mapped[str] = mapped_column(Text().with_variant(LONGTEXT(), "mysql", "mariadb"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    note: Mapped[str | None] = mapped_column(Text)
    # the failed job whose half-applied revision this request resumes (None: a plain job)
    recovery_of: Mapped[int | None]

    requester: Mapped[User | None] = relationship()
    approvals: Mapped[list[Approval]] = relationship(back_populates="request",
                                                     cascade="all, delete-orphan",
                                                     order_by="Approval.id")
    comments: Mapped[list[RequestComment]] = relationship(
        cascade="all, delete-orphan", order_by="RequestComment.id")
    views: Mapped[list[RequestView]] = relationship(cascade="all, delete-orphan",
                                                    order_by="RequestView.id")


class Approval(db.Model):
    """One approver's decision on a request, pinned to the plan hash it saw.

    ``decision`` is "approve", "reject" or "changes" (changes requested).
    ``void`` is set when the plan changed after this approval was given;
    ``without_viewing`` when the approver approved without ticking every
    revision as viewed (said so explicitly, or through the API).
    """

    __tablename__ = "approvals"
    __table_args__ = (db.UniqueConstraint("request_id", "approver_id", "plan_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), index=True)
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decision: Mapped[str] = mapped_column(String(8))  # approve | reject | changes
    comment: Mapped[str] = mapped_column(Text, default="")
    plan_hash: Mapped[str] = mapped_column(String(64))
    void: Mapped[bool] = mapped_column(default=False)
    without_viewing: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    request: Mapped[ApprovalRequest] = relationship(back_populates="approvals")
    approver: Mapped[User | None] = relationship()


class CommentKind(StrEnum):
    """What a thread entry is: a person's ``comment``, a ``decision``
    (approve / request changes / reject, with its reason) or a ``system``
    note (a new plan submitted, approvals voided)."""

    COMMENT = "comment"
    DECISION = "decision"
    SYSTEM = "system"


class RequestComment(db.Model):
    """One entry of a request's thread, oldest first. ``plan_hash`` is the
    plan the request had when it was written; ``author`` is None for a
    system note (or a deleted account)."""

    __tablename__ = "request_comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"), index=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    plan_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    author: Mapped[User | None] = relationship()


class RequestView(db.Model):
    """A user's *Viewed* tick on one revision of a request: the revision
    file's SHA-256 (``sha256``, from the plan step) and the plan's hash when
    ticked. A tick counts only while the request's plan has that revision
    with that same file checksum, so a changed file needs a new look."""

    __tablename__ = "request_views"
    __table_args__ = (db.UniqueConstraint("request_id", "user_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    revision: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    plan_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
