"""The changelog of each target: which revision was applied or reverted,
by whom, through which job or request, how long it took, and the schema
before and after (snapshots stored compressed, shared when unchanged)."""

from __future__ import annotations

import json
import zlib
from datetime import datetime

from sqlalchemy import Float, ForeignKey, LargeBinary, String, Text
from sqlalchemy.dialects.mysql import LONGBLOB, LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..extensions import db
from .accounts import User
from .clock import utcnow


class SchemaSnapshot(db.Model):
    """A target database's schema as reflected by the agent (the JSON of
    ``alembic_dashboard_agent.schema``), zlib-compressed in ``body``;
    ``digest`` is the SHA-256 of its canonical JSON, so an unchanged schema
    is stored once per target."""

    __tablename__ = "schema_snapshots"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb"))
    taken_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def schema(self) -> dict:
        """``body`` decompressed and decoded."""
        return json.loads(zlib.decompress(self.body))

    @staticmethod
    def encode(schema: dict) -> tuple[str, bytes]:
        """(digest, compressed body) of ``schema``."""
        import hashlib

        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(canonical).hexdigest(), zlib.compress(canonical, 6)


class ChangelogEntry(db.Model):
    """One revision applied (``upgrade``), reverted (``downgrade``) or stamped
    on a target by a job. ``schema_diff`` is the JSON list of differences
    between the job's before and after snapshots (``webapp.core.schema_diff``;
    the revisions of one job share it); ``seconds`` the revision's own time,
    when the agent measured it; ``status`` the job's outcome ("succeeded",
    or "failed" for the revision a failed job left partly applied)."""

    __tablename__ = "changelog_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    revision: Mapped[str] = mapped_column(String(1000))
    direction: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="succeeded")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"),
                                               index=True)
    request_id: Mapped[int | None] = mapped_column(
        ForeignKey("approval_requests.id", ondelete="SET NULL"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    seconds: Mapped[float | None] = mapped_column(Float)
    before_id: Mapped[int | None] = mapped_column(
        ForeignKey("schema_snapshots.id", ondelete="SET NULL"))
    after_id: Mapped[int | None] = mapped_column(
        ForeignKey("schema_snapshots.id", ondelete="SET NULL"))
    schema_diff: Mapped[str] = mapped_column(
        Text().with_variant(LONGTEXT(), "mysql", "mariadb"), default="[]")

    user: Mapped[User | None] = relationship()

    @property
    def differences(self) -> list[dict]:
        """``schema_diff`` decoded."""
        return json.loads(self.schema_diff or "[]")
