"""The one clock of the dashboard's tables."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Current time in UTC, timezone-naive (stored as UTC in every dialect)."""
    return datetime.now(UTC).replace(tzinfo=None)
