"""Autogenerate preview, revision authoring, drift, offline SQL downloads.

Everything that runs the target's env.py goes through the target-side
helper (its own interpreter and process). Previews write nothing; new
revision files are written by Alembic itself (``alembic revision`` /
``alembic merge``), never named from user text.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cachetools

from ..core.history import HistoryError
from ..core.lint import lint_sql
from ..core.permissions import Role
from ..core.runner import TargetProcessError, run_agent
from ..core.targets import Target, TargetUrlMissing
from ..models import User
from . import accounts, audit
from .catalog import Catalog, Memo
from .refusals import Reason, Refused, needs_role

MESSAGE_MAX = 200
# a message goes into a Python docstring: no quotes that could close it, no
# backslash escapes, no control or line-breaking characters
_MESSAGE_FORBIDDEN_RE = re.compile(r'"""|\\|[\x00-\x1f\x7f-\x9f\u2028\u2029]')
BRANCH_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
DRIFT_TTL = 60.0  # seconds a drift result is shown before it is computed again


@dataclass
class Preview:
    """An autogenerate comparison: ``changes`` are dicts (kind, text,
    destructive, why); ``upgrade``/``downgrade`` the rendered bodies exactly
    as ``alembic revision --autogenerate`` writes them; ``sql`` the upgrade's
    SQL in the target's dialect; ``sql_notes`` the operations whose SQL
    could not be rendered offline (SQLite constraint changes), shown instead
    of failing the whole preview; ``findings`` its lint. ``error`` is a
    :class:`TargetProcessError` when the comparison failed."""

    target: str
    changes: list[dict] = field(default_factory=list)
    upgrade: str = ""
    downgrade: str = ""
    imports: str = ""
    sql: str = ""
    sql_notes: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    error: TargetProcessError | None = None
    computed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def destructive(self) -> list[dict]:
        """The changes flagged destructive."""
        return [c for c in self.changes if c["destructive"]]


def preview(catalog: Catalog, target: Target) -> Preview:
    """Compare the target's models with its database (writes nothing).

    Never raises for env.py or database errors: they come back in ``error``.
    """
    result = Preview(target.name)
    try:
        # a read path: the read-only account when named; the agent refuses a
        # missing SQLite file (DatabaseMissing) and any write (read-only connection)
        url = catalog.read_url(target)
        data = run_agent(target, {"op": "autogenerate"}, url=url).data
    except TargetProcessError as exc:
        result.error = exc
        return result
    except TargetUrlMissing as exc:
        result.error = TargetProcessError(str(exc), "ConfigurationError")
        return result
    result.changes, result.sql = data["changes"], data["sql"]
    result.sql_notes = data.get("sql_notes", [])
    result.upgrade, result.downgrade, result.imports = (data["upgrade"], data["downgrade"],
                                                        data["imports"])
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    result.findings = [f.as_dict() for f in lint_sql(result.sql, dialect)]
    return result


@dataclass
class Drift:
    """Drift badge: ``state`` is "in sync", "differences", "not at head",
    "unknown"; ``count`` the number of differences; ``checked_at`` UTC."""

    state: str
    count: int = 0
    detail: str = ""
    checked_at: float = field(default_factory=time.time)
    revisions: tuple = ()  # (current revisions, script directory fingerprint) checked

    @property
    def checked_utc(self) -> datetime:
        """``checked_at`` (a Unix time) as a UTC datetime, for the badge's
        "checked YYYY-MM-DD HH:MM UTC" (how the other pages show times)."""
        return datetime.fromtimestamp(self.checked_at, UTC)


_drift = Memo(cachetools.TTLCache(maxsize=1024, ttl=DRIFT_TTL))


def drift(catalog: Catalog, target: Target) -> Drift:
    """Drift of the database against the models at head, cached :data:`DRIFT_TTL` s
    and only while the database's current revisions and the script directory
    stay as they were (a job, or a CLI run, makes it be computed again)."""
    status = catalog.status(target)
    revisions = (tuple(sorted(status.current)), status.reachable,
                 status.history.fingerprint if status.history else None)
    found = _drift.get_or_compute(target.name,
                                  lambda: _compute_drift(catalog, target, status, revisions))
    if found.revisions != revisions:
        _drift.forget(target.name)
        found = _drift.get_or_compute(
            target.name, lambda: _compute_drift(catalog, target, status, revisions))
    return found


def _compute_drift(catalog: Catalog, target: Target, status, revisions: tuple) -> Drift:
    if not status.reachable or status.history is None:
        result = Drift("unknown", detail=status.error or status.history_error or "")
    elif set(status.current) != set(status.heads):
        result = Drift("not at head", detail=f"{len(status.pending)} pending")
    else:
        found = preview(catalog, target)
        if found.error is not None:
            result = Drift("unknown", detail=f"{found.error.error_type}: {found.error}")
        elif found.changes:
            result = Drift("differences", len(found.changes))
        else:
            result = Drift("in sync")
    result.revisions = revisions
    return result


def forget_drift(target_name: str) -> None:
    """Drop the cached drift of a target (after a job or a new revision)."""
    _drift.forget(target_name)


def message_problem(message: str) -> str | None:
    """Why a revision message (already stripped) is refused, or None.

    It must be 1-:data:`MESSAGE_MAX` characters on one line, without
    ``\"\"\"``, backslashes or control characters (it goes into the
    revision's docstring), and without Unicode format characters (category
    Cf: bidirectional overrides such as U+202E, zero-width characters, BOM),
    which make the message and the file name read differently from what
    they hold.
    """
    if not 1 <= len(message) <= MESSAGE_MAX or _MESSAGE_FORBIDDEN_RE.search(message):
        return (f"The message must be 1-{MESSAGE_MAX} characters on one line, without "
                '""", backslashes or control characters.')
    for char in message:
        if unicodedata.category(char) == "Cf":
            return (f"The message holds the invisible format character U+{ord(char):04X} "
                    f"({unicodedata.name(char, 'unnamed')}); such characters (bidirectional "
                    "overrides, zero-width characters) are not allowed.")
    return None


def can_write(user: User, target: Target) -> bool:
    """True when ``user`` may write revision files of ``target`` (what
    :func:`create_revision` checks first): the operator role there and a
    policy that allows authoring. For pages that offer the form."""
    return accounts.access_on(user, target).allows(Role.OPERATOR) \
        and target.policy.allow_revision_authoring


def create_revision(catalog: Catalog, user: User, target: Target, *, kind: str, message: str,
                    branch_label: str | None, head: str | None, actor: audit.Actor) -> str:
    """Write a new revision file with Alembic: ``autogenerate`` (alembic revision
    --autogenerate -m), ``empty`` (alembic revision -m) or ``merge`` (alembic
    merge heads -m).

    :return: the new revision id (made by Alembic).
    :raises Refused: 403 role/policy, 400 bad input, 409 not possible now,
        422 Alembic or env.py failed.
    """
    access = accounts.access_on(user, target)
    if not access.allows(Role.OPERATOR):
        raise needs_role(f"Writing revisions on {target.name}", "operator", access.role.label)
    actor = actor.granted(access.granted_by(Role.OPERATOR))
    if not target.policy.allow_revision_authoring:
        raise Refused(Reason.POLICY, f"The policy of {target.name} does not allow writing "
                         "revision files (allow_revision_authoring = false).")
    if kind not in ("autogenerate", "empty", "merge"):
        raise Refused(Reason.BAD_INPUT, "kind must be autogenerate, empty or merge")
    message = (message or "").strip()
    problem = message_problem(message)
    if problem is not None:
        raise Refused(Reason.BAD_INPUT, problem)
    branch_label = (branch_label or "").strip() or None
    if branch_label is not None and not BRANCH_LABEL_RE.match(branch_label):
        raise Refused(Reason.BAD_INPUT, "A branch label is a letter then letters, digits "
                         "or _ (up to 40).")
    try:
        history = catalog.history(target)
    except HistoryError as exc:
        raise Refused(Reason.SCRIPT_DIRECTORY, f"The script directory cannot be read: {exc}")
    head = (head or "").strip() or None
    if kind == "merge":
        if len(history.heads) < 2:
            raise Refused(Reason.NOTHING_TO_DO, "There is only one head: nothing to merge.")
        branch_label = head = None
    elif len(history.heads) > 1:
        if head not in history.heads:
            raise Refused(Reason.BAD_INPUT, "There are several heads: choose the head the "
                             "new revision builds on.")
    else:
        head = None
    request = {"op": "revision", "kind": kind, "message": message,
               "branch_label": branch_label, "head": head}
    try:
        data = run_agent(target, request, url=catalog.database_url(target)).data
    except TargetProcessError as exc:
        audit.record(actor, "revision.create", "failed", target=target.name, kind=kind,
                     error=f"{exc.error_type}: {exc}"[:500])
        raise Refused(Reason.PLAN_FAILED, f"Alembic could not write the revision: "
                         f"{exc.error_type}: {exc}")
    audit.record(actor, "revision.create", "ok", target=target.name, kind=kind,
                 revision=data["revision"], message=message, branch_label=branch_label,
                 head=head)
    forget_drift(target.name)
    return data["revision"]


def range_sql(catalog: Catalog, target: Target, start: str | None, end: str) -> str:
    """Offline SQL of ``upgrade start:end`` like ``alembic upgrade A:B --sql``
    (``start`` None = from base).

    :raises TargetProcessError: env.py or a migration failed offline.
    """
    return run_agent(target, {"op": "range_sql", "start": start, "end": end},
                             url=catalog.read_url(target)).data["sql"]


def _one_line(text: str) -> str:
    """``text`` with every character that could end an SQL comment line replaced."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", "?", text)


def sql_file(target: Target, user: str, start: str | None, end: str, sql: str) -> tuple[str, str]:
    """(file name, text) of a downloadable SQL script with a header comment.

    The file name holds only ``[A-Za-z0-9._,-]`` (revision ids come from the
    target's files); the header's values cannot leave their comment line.
    """
    name = re.sub(r"[^A-Za-z0-9._,-]", "_",
                  f"{target.name}_{(start or 'base')[:40]}_{end[:40]}.sql")
    header = (f"-- Alembic Dashboard offline SQL for target {target.name}\n"
              f"-- range: {_one_line(start or 'base')} -> {_one_line(end)}\n"
              f"-- generated at {datetime.now(UTC).isoformat(timespec='seconds')} "
              f"by {_one_line(user)}\n"
              "-- review before applying by hand; it updates the version table too\n\n")
    return name, header + sql
