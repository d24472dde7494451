"""The statement journal of an online run whose DDL is not transactional.

Where Alembic's impl says ``transactional_ddl`` is False (MySQL/MariaDB,
SQLite), a revision that fails or is killed half-way leaves its first
statements applied. The journal names them: every statement a revision's
migration executes is reported on stdout just before it runs and again
once it has run, one line each, flushed at once (a line printed survives a
SIGKILL of this process: it is already in the job process's pipe)::

    [dashboard] journal {"event": "started", "revision": "r001", "position": 3,
     "sha256": "…", "sql": "CREATE TABLE …", "object": {"kind": "table",
     "table": "t", "name": "t"}, "at": 1765000000.123}
    [dashboard] journal {"event": "finished", "revision": "r001", "position": 3,
     "at": 1765000000.130}

``position`` counts from 1 within the revision; ``sha256`` is the hex
SHA-256 of the SQL as compiled for the database; ``at`` is UNIX time in
seconds; ``object`` (or None) is what the statement creates, read from the
construct itself: a table (``CREATE TABLE``), a column (``ADD COLUMN``) or an
index (``CREATE INDEX``) — what the dashboard checks against the live schema.
The version table's own updates are not journalled (``alembic_version``
says where the run is). The SQL is sent as compiled: the dashboard redacts
its literals before it keeps it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

PREFIX = "[dashboard] journal "


def created_object(construct) -> dict | None:
    """``{"kind": "table"|"column"|"index", "table", "name"}`` of what a DDL
    construct creates (SQLAlchemy's ``CreateTable``/``CreateIndex``, Alembic's
    ``AddColumn``), or None for any other statement."""
    from alembic.ddl.base import AddColumn
    from sqlalchemy.schema import CreateIndex, CreateTable

    if isinstance(construct, CreateTable):
        return {"kind": "table", "table": construct.element.name, "name": construct.element.name}
    if isinstance(construct, CreateIndex):
        index = construct.element
        return {"kind": "index", "table": index.table.name if index.table is not None else None,
                "name": index.name}
    if isinstance(construct, AddColumn):
        return {"kind": "column", "table": construct.table_name,
                "name": construct.column.name}
    return None


def _is_version_update(construct, version_table: str) -> bool:
    table = getattr(construct, "table", None)
    if type(construct).__name__ == "CreateTable":
        table = construct.element
    return getattr(table, "name", None) == version_table and \
        type(construct).__name__ in ("Insert", "Update", "Delete", "CreateTable")


def _sql(impl, construct) -> str:
    if isinstance(construct, str):
        return construct
    try:
        return str(construct.compile(dialect=impl.dialect))
    except Exception:  # noqa: BLE001 - a construct that only compiles with its binds
        return type(construct).__name__


class ResumeMismatch(Exception):
    """A resumed revision's statement is not the one the journal says ran."""


class Journal:
    """Wraps each statement of the run (see :func:`.alembic_private.wrap_impl_exec`).

    :param revision_of: returns the revision whose migration is running now
        (the run's last started step), or None before the first.
    :param version_table: the version table, whose updates are left out.
    :param emit: where a line goes (default: print to stdout, flushed).
    :param offline: journal offline mode (``--sql``) too: how the op
        ``offline_sql`` lists a revision's statements with the same hashes.
    :param resume: ``{"revision", "done": [{"position", "sha256"}]}``: the
        statements of that revision that already took effect (from the
        failed job's journal) are not run again; each must be the statement
        the journal recorded (same position, same SHA-256), else
        :class:`ResumeMismatch` is raised before it runs. Their lines carry
        ``"skipped": true``.
    """

    def __init__(self, revision_of: Callable[[], str | None], version_table: str,
                 emit: Callable[[str], None] | None = None, *, offline: bool = False,
                 resume: dict | None = None) -> None:
        self.revision_of = revision_of
        self.version_table = version_table
        self.emit = emit or (lambda line: print(line, flush=True))
        self.offline = offline
        self.resume_revision = (resume or {}).get("revision")
        self.resume_done = {int(d["position"]): d["sha256"] for d in (resume or {}).get("done", [])}
        self.enabled = offline  # online: set once env.py configured a non-transactional impl
        self._revision: str | None = None
        self._position = 0

    def _line(self, record: dict) -> None:
        self.emit(PREFIX + json.dumps(record, separators=(",", ":")))

    def around(self, execute, impl, construct):
        """Run ``execute()`` between its "started" and "finished" lines."""
        revision = self.revision_of()
        if not self.enabled or impl.as_sql != self.offline or revision is None or \
                _is_version_update(construct, self.version_table):
            return execute()
        if revision != self._revision:
            self._revision, self._position = revision, 0
        self._position += 1
        position, sql = self._position, _sql(impl, construct)
        sha256 = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        skip = revision == self.resume_revision and position in self.resume_done
        if skip and self.resume_done[position] != sha256:
            raise ResumeMismatch(
                f"statement {position} of {revision} is not the one the journal says ran "
                f"(SHA-256 {sha256[:12]}…, journal {self.resume_done[position][:12]}…): the "
                "revision file changed; nothing of it was run")
        try:
            found = created_object(construct)
        except Exception:  # noqa: BLE001 - the journal never fails the migration
            found = None
        extra = {"skipped": True} if skip else {}
        self._line({"event": "started", "revision": revision, "position": position,
                    "sha256": sha256, "sql": sql, "object": found,
                    "at": round(time.time(), 6), **extra})
        outcome = None if skip else execute()
        self._line({"event": "finished", "revision": revision, "position": position,
                    "at": round(time.time(), 6), **extra})
        return outcome


def listing(revision: str, version_table: str) -> tuple[Journal, list[dict], Callable[[], None]]:
    """A :class:`Journal` of offline mode that collects one revision's
    statements: ``(journal, statements, undo)``; after the offline run,
    ``statements`` holds ``{"position", "sha256", "sql", "object"}`` per
    statement, in order; ``undo()`` removes the wrapper."""
    from . import alembic_private

    found: list[dict] = []

    def keep(line: str) -> None:
        record = json.loads(line[len(PREFIX):])
        if record["event"] == "started":
            found.append({key: record[key] for key in ("position", "sha256", "sql", "object")})

    journal = Journal(lambda: revision, version_table, keep, offline=True)
    return journal, found, alembic_private.wrap_impl_exec(journal.around)
