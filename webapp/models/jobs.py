"""Jobs (one run of an Alembic command against a target), the per-target
guard, checksums of applied revision files, rehearsals."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .accounts import User
from .clock import utcnow


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

    ``current_before``/``current_after`` are the database's current
    revisions before/after the run (columns ``from_revisions``/``to_revisions``;
    ``current_after`` is None until known); they and ``applied_revisions`` are
    space-separated revision ids (empty = base); ``log`` is everything the
    command printed (Alembic's output, env.py's logging, the traceback).
    ``plan_hash`` pins the job to the plan the user confirmed.
    ``recovery`` (JSON, see :attr:`recovery_order`) is set on a job that
    resumes another job's half-applied revision.
    ``blocked_by`` (JSON, None when its migration never waited on a lock)
    is what the agent's blocked-by watch saw: ``{"session", "waiting",
    "blockers": [...], "seen": [...]}`` while it runs, and after the end
    ``seen``, the sessions that last blocked it (see :attr:`blockers`).
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    plan_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    # the columns keep their first names (no dashboard-database migration)
    current_before: Mapped[str] = mapped_column("from_revisions", String(1000), default="")
    current_after: Mapped[str | None] = mapped_column("to_revisions", String(1000))
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
    blocked_by: Mapped[str | None] = mapped_column(Text)
    # JSON: what a resume job skips or a compensation undoes (see recovery_order)
    recovery: Mapped[str | None] = mapped_column(Text)
    # JSON [{"schema", "name", "table"}]: INVALID indexes its plan drops first (None: none)
    drop_indexes: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User | None] = relationship()

    @property
    def recovery_order(self) -> dict | None:
        """``recovery`` decoded: ``{"kind": "resume", "job": failed job id,
        "revision", "done": [{"position", "sha256"}]}`` for a job that resumes a
        half-applied revision from its failed job's statement journal,
        ``{"kind": "compensate", "job", "revision", "statements": [SQL]}`` for
        one that undoes what took effect of it; None for any other job."""
        import json

        try:
            return json.loads(self.recovery) if self.recovery else None
        except ValueError:
            return None

    @property
    def blocked(self) -> dict | None:
        """``blocked_by`` decoded (None when absent or unreadable)."""
        import json

        try:
            return json.loads(self.blocked_by) if self.blocked_by else None
        except ValueError:
            return None

    @property
    def blockers(self) -> list[dict] | None:
        """The sessions blocking the migration: while it waits, those of the
        last look; else (between retries, after the end) those it last waited
        on; None when it never waited. Each ``{"pid", "user", "application",
        "state", "since", "query"}`` (query redacted)."""
        blocked = self.blocked
        if blocked is None:
            return None
        if self.is_active and blocked.get("blockers"):
            return blocked["blockers"]
        return blocked.get("seen") or []

    @property
    def indexes_to_drop(self) -> list[dict]:
        """``drop_indexes`` decoded: ``[{"schema", "name", "table"}]`` ([] for none)."""
        import json

        try:
            return json.loads(self.drop_indexes) if self.drop_indexes else []
        except ValueError:
            return []

    def run_extra(self) -> dict:
        """This job's keys of the agent's ``run`` order: ``expect_current``
        (the plan's current revisions); when its plan drops INVALID indexes
        first, ``drop_invalid_indexes`` (``[{"schema", "name"}]``); for a
        resume job, ``resume`` (``{"revision", "done"}``: the statements of the
        half-applied revision that took effect, skipped by position and hash);
        for a compensation (command ``compensate``), ``compensate``
        (``{"revision", "statements"}``: the inverse SQL to run, in order)."""
        extra: dict = {"expect_current": self.split(self.current_before)}
        if self.indexes_to_drop:
            extra["drop_invalid_indexes"] = [{"schema": i["schema"], "name": i["name"]}
                                             for i in self.indexes_to_drop]
        recovery = self.recovery_order
        if recovery and recovery.get("kind") == "resume":
            extra["resume"] = {"revision": recovery["revision"], "done": recovery["done"]}
        if recovery and recovery.get("kind") == "compensate":
            extra["compensate"] = {"revision": recovery["revision"],
                                   "statements": recovery["statements"]}
        return extra

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
    ``failing_statement``, ``error``, ``copy`` (what the copy was). A
    ``kind`` "stairway" row is a stairway test of the plan instead
    (:mod:`webapp.services.stairways`): ``result`` has ``revisions``.
    """

    __tablename__ = "rehearsals"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    command: Mapped[str] = mapped_column(String(16))
    revision: Mapped[str] = mapped_column(String(64))
    plan_hash: Mapped[str] = mapped_column(String(64), index=True)
    # "rehearsal" (the plan's migrations) or "stairway" (up, down, up per revision)
    kind: Mapped[str] = mapped_column(String(16), default="rehearsal",
                                      server_default="rehearsal")
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
