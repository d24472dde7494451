"""Audit events: every action and every denied attempt (append-only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .clock import utcnow


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
