"""The statement journal of a job whose target's DDL is not transactional."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.dialects.mysql import MEDIUMTEXT
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class JobStatement(db.Model):
    """One statement a job's revision executed, as the agent's journal reported
    it (:mod:`webapp.agent.alembic_dashboard_agent.journal`).

    ``position`` counts from 1 within ``revision``; ``sha256`` is the hex
    SHA-256 of the SQL as run; ``sql`` the SQL with its string literals
    redacted; ``object_kind``/``object_table``/``object_name`` what it creates
    (``table``, ``column``, ``index``; None for other statements);
    ``started_at`` is set before the statement ran, ``finished_at`` once it
    had run (None: it was running when the job failed or was killed). UTC.
    """

    __tablename__ = "job_statements"
    __table_args__ = (UniqueConstraint("job_id", "revision", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    revision: Mapped[str] = mapped_column(String(64))
    position: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    sql: Mapped[str] = mapped_column(Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb"))
    object_kind: Mapped[str | None] = mapped_column(String(16))
    object_table: Mapped[str | None] = mapped_column(String(255))
    object_name: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
