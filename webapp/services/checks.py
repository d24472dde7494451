"""Trust checks on applied revisions: was a revision file edited (or removed)
after a job applied it? Like Flyway's ``validate``."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime

from ..core.history import History
from ..extensions import db
from ..models import AppliedRevision

_digests: dict[tuple[str, int, int], str] = {}
_digests_lock = threading.Lock()


def file_sha256(path: str) -> str | None:
    """SHA-256 hex of a file, cached on (path, size, mtime); None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_size, st.st_mtime_ns)
    with _digests_lock:
        if key in _digests:
            return _digests[key]
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with _digests_lock:
        if len(_digests) > 20_000:
            _digests.clear()
        _digests[key] = digest
    return digest


@dataclass
class ChecksumWarning:
    """An applied revision whose file no longer matches: ``state`` is
    "edited" or "missing"; ``applied_at`` is when the job applied it (UTC)."""

    revision: str
    state: str
    target: str
    applied_at: datetime
    job_id: int | None

    @property
    def message(self) -> str:
        """One sentence for the target page."""
        when = self.applied_at.strftime("%Y-%m-%d %H:%M UTC")
        if self.state == "missing":
            return (f"revision {self.revision} was applied on {self.target} on {when}, "
                    "but its file has disappeared from the script directory")
        return (f"revision {self.revision} was edited after it was applied on "
                f"{self.target} on {when}")


def checksum_warnings(target_name: str, history: History | None) -> dict[str, ChecksumWarning]:
    """Warnings by revision id for every recorded applied revision of a target
    whose file changed or vanished since it was applied."""
    rows = db.session.execute(db.select(AppliedRevision).filter_by(
        target=target_name)).scalars().all()
    warnings = {}
    for row in rows:
        info = history.get(row.revision) if history is not None else None
        path = str(info.path) if info is not None else row.path
        digest = file_sha256(path) if info is not None else None
        if digest == row.sha256:
            continue
        warnings[row.revision] = ChecksumWarning(row.revision, "missing" if digest is None
                                                 else "edited", target_name, row.applied_at,
                                                 row.job_id)
    return warnings
