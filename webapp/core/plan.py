"""Plans: exactly which revisions a job will run, their SQL, and warnings.

A :class:`Plan` is computed by the target-side helper from the database's
*current* state (like ``alembic upgrade <current>:<rev> --sql``). Its
:attr:`Plan.hash` pins a confirmation (and later an approval) to what was
shown: current heads, steps, revision file checksums and SQL.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy.engine import make_url

from .lint import lint_sql
from .runner import run_agent
from .targets import Target

COMMANDS = ("upgrade", "downgrade", "stamp")
SYMBOLIC_REVISIONS = ("head", "heads", "base", "+1", "-1")
_REVISION_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
BRANCH_HEAD = "@head"  # <label>@head: the head of a labelled branch (Alembic's syntax)
# <label>@+1 / <revision>@-1: steps relative to a branch or a revision (Alembic's syntax)
_RELATIVE_RE = re.compile(r"^(?P<anchor>[A-Za-z0-9_]{1,64})@(?P<step>[+-][1-9][0-9]?)$")


class PlanError(ValueError):
    """The requested command/revision cannot be planned (message says why)."""


def validate_request(command: str, revision: str, known: set[str],
                     labels: Collection[str] = ()) -> None:
    """Check a command and revision chosen by a user.

    :param known: revision ids of the target's script directory.
    :param labels: its branch labels: ``<label>@head`` (Alembic's head of
        that branch) is accepted for each of them.

    Relative steps on one branch, ``<label>@+N`` / ``<label>@-N`` and
    ``<revision>@+N`` / ``<revision>@-N`` (N from 1 to 99), are accepted for a
    known label or revision id: Alembic resolves them against the current
    revisions when the plan is computed (and refuses a step that is not there).
    :raises PlanError: unknown command, malformed revision (400).
    :raises LookupError: well-formed but unknown revision id or branch label (404).
    """
    if command not in COMMANDS:
        raise PlanError(f"command must be one of {', '.join(COMMANDS)}")
    if not isinstance(revision, str) or revision in SYMBOLIC_REVISIONS:
        if not isinstance(revision, str):
            raise PlanError("revision must be a string")
        return
    relative = _RELATIVE_RE.match(revision)
    if relative is not None:
        anchor = relative.group("anchor")
        if anchor in labels or anchor in known:
            return
        raise LookupError(f"no branch label or revision {anchor!r} in this target's "
                          "script directory")
    label = revision[:-len(BRANCH_HEAD)] if revision.endswith(BRANCH_HEAD) else None
    if label is not None and label in labels:
        return
    if label is not None and _REVISION_RE.match(label):
        raise LookupError(f"no branch labelled {label!r} in this target's script directory")
    if not _REVISION_RE.match(revision):
        raise PlanError("revision must be a revision id from the list, <branch label>@head, "
                        "<branch label or revision>@+1 / @-1, or one of "
                        + ", ".join(SYMBOLIC_REVISIONS))
    if revision not in known:
        raise LookupError(f"no revision {revision!r} in this target's script directory")


@dataclass
class PlanStep:
    """One step: ``direction`` is upgrade, downgrade or stamp."""

    revision: str
    direction: str
    down_revisions: list[str]
    message: str
    path: str | None
    sha256: str | None


@dataclass
class Plan:
    """What a job will do, computed from the database's current state.

    ``current_before``/``current_after`` are the database's current revisions
    before/after the job (revision ids, empty = base; the script directory's
    heads are only ever called ``heads``); ``sql`` is
    the offline SQL of all steps in the target's dialect; ``rehearsal`` is
    True when the SQL was captured on a scratch copy (SQLite batch mode, or
    revisions that inspect the database).

    ``unrendered`` lists the revisions offline mode could not render because
    they need a live connection (``sa.inspect(op.get_bind())``...), from the
    agent: ``{"revision", "direction", "path", "error", "captured"}`` plus
    ``"source"`` (the revision file's text) when not ``captured`` — then the
    SQL holds a note in place of their statements, lint did not see them, and
    the hash pins them by their file checksums (as every step). ``rehearsal_error``
    says why a rehearsal could not capture their SQL (None when not tried or
    when it did). ``recovery`` is set on the plan of a resume job
    (``{"kind": "resume", "job", "revision", "done": [{"position", "sha256"}]}``:
    the statements of a failed job's half-applied revision that it skips) and
    on a compensation's (command ``compensate``: ``{"kind": "compensate",
    "job", "revision", "statements": [SQL]}``, the inverse of what took
    effect, no steps); the hash covers it.

    ``invalid_indexes`` lists the INVALID indexes (a failed ``CREATE INDEX
    CONCURRENTLY``) the live database still has, ``[{"schema", "name",
    "table", "left_by_job"}]``; ``drop_indexes`` those the job drops before
    its migration (their statements head ``sql``), see
    :mod:`webapp.core.invalid_indexes`.
    """

    target: str
    command: str
    revision: str
    current_before: list[str]
    current_after: list[str]
    steps: list[PlanStep]
    sql: str
    dialect: str
    rehearsal: bool = False
    warnings: list[str] = field(default_factory=list)
    findings: list[dict] = field(default_factory=list)
    unrendered: list[dict] = field(default_factory=list)
    rehearsal_error: str | None = None
    recovery: dict | None = None
    invalid_indexes: list[dict] = field(default_factory=list)
    drop_indexes: list[dict] = field(default_factory=list)

    @property
    def unseen_revisions(self) -> list[str]:
        """Revisions whose SQL is not shown (and so not linted): they inspect
        the database and no rehearsal captured it."""
        return [u["revision"] for u in self.unrendered if not u.get("captured")]

    @property
    def hash(self) -> str:
        """SHA-256 over everything the user confirms (hex)."""
        pinned = {
            "target": self.target, "command": self.command, "revision": self.revision,
            "current": sorted(self.current_before),  # key kept: stored hashes stay valid
            "steps": [[s.revision, s.direction, s.sha256] for s in self.steps],
            "sql": self._sql_for_hash(),
        }
        if self.recovery is not None:  # only then: the hashes of other plans stay as they were
            pinned["recovery"] = self.recovery
        if self.drop_indexes:  # only then: the hashes of other plans stay as they were
            pinned["drop_indexes"] = [[i["schema"], i["name"]] for i in self.drop_indexes]
        payload = json.dumps(pinned, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _sql_for_hash(self) -> str | list[str]:
        # A rehearsal on SQLite replays batch operations, which emit indexes and
        # constraints in an order Alembic takes from sets of objects (it varies
        # between runs). Every line is pinned; the order of lines is not.
        if self.rehearsal:
            return sorted(line.strip(" ,\t") for line in self.sql.splitlines() if line.strip())
        return self.sql

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to run (a compensation runs statements, no step)."""
        return not self.steps and not (self.recovery or {}).get("statements")


def is_transactional_ddl(dialect: str) -> bool:
    """Alembic's own verdict for a dialect (backend name, e.g. ``"sqlite"``):
    its migration impl's ``transactional_ddl``. False for MySQL/MariaDB (each
    DDL statement commits by itself), SQLite (``SQLiteImpl``: Alembic runs its
    DDL outside a transaction), Oracle; True for PostgreSQL and SQL Server. A
    dialect Alembic has no impl for gets its default impl's False: a failure
    part-way is then reported as possibly partly applied, never as rolled back.
    """
    import alembic.ddl  # noqa: F401  (registers every dialect's impl)
    from alembic.ddl.impl import DefaultImpl
    from sqlalchemy.exc import ArgumentError

    try:
        found = make_url(f"{dialect}://").get_dialect()
    except (ArgumentError, ValueError):  # unknown or unparsable name (NoSuchModuleError too)
        return DefaultImpl.transactional_ddl
    try:
        return bool(DefaultImpl.get_by_dialect(found).transactional_ddl)
    except KeyError:
        return DefaultImpl.transactional_ddl


def plan_warnings(plan: Plan, heads: tuple[str, ...]) -> list[str]:
    """Warnings shown with a plan: non-transactional DDL, multiple heads,
    downgrades, stamps (the SQL's own risks are in ``plan.findings``)."""
    warnings = []
    if plan.steps and not is_transactional_ddl(plan.dialect):
        warnings.append(
            f"{plan.dialect} DDL is not transactional: a failure part-way can leave the "
            "database partly migrated (earlier revisions stay applied; the failing "
            "revision's DDL may be partly applied).")
    if len(heads) > 1 and plan.revision in ("head", "+1", "-1"):  # not for heads or an id
        warnings.append(f"the script directory has {len(heads)} heads ({', '.join(heads)}); "
                        "'head' is ambiguous, use 'heads' or a specific revision.")
    if plan.command == "downgrade" and plan.steps:
        warnings.append("this is a downgrade: the downgrade() functions of "
                        f"{len(plan.steps)} revision(s) will run.")
    warnings.extend(unrendered_warnings(plan))
    if plan.command == "stamp":
        warnings.append("stamp changes only the version table; no migration runs, the "
                        "schema is not checked.")
    return warnings


UNSEEN_NOTE = "this revision's SQL cannot be shown before it runs (it inspects the database)"


def unrendered_warnings(plan: Plan) -> list[str]:
    """What a plan could not show: revisions that inspect the database, whose
    SQL was captured from a rehearsal or is not shown at all."""
    warnings = []
    unseen = plan.unseen_revisions
    captured = [u["revision"] for u in plan.unrendered if u.get("captured")]
    if unseen:
        why = f" (a rehearsal on a scratch copy failed: {plan.rehearsal_error})" \
            if plan.rehearsal_error else ""
        warnings.append(
            f"the SQL of {', '.join(unseen)} cannot be shown before it runs (it inspects "
            f"the database){why}: lint did not see it. Read the revision's source below; "
            "the confirmation is pinned to the revision files' checksums.")
    if captured:
        warnings.append(
            f"{', '.join(captured)} inspect(s) the database, so offline mode cannot render "
            "its SQL: the SQL shown was captured from a rehearsal on a scratch copy of the "
            "database as it is now.")
    return warnings


def unseen_findings(plan: Plan) -> list[dict]:
    """One lint finding (rule ``not_seen``) per revision whose SQL lint could not read."""
    from .lint_findings import Finding

    return [Finding(rule="not_seen", revision=u["revision"], statement=f"{u['direction']}()",
                    why=f"{UNSEEN_NOTE}; lint could not check it ({u.get('error', '')})"
                    ).as_dict()
            for u in plan.unrendered if not u.get("captured")]


def compute_plan(target: Target, command: str, revision: str, *, url: str,
                 heads: tuple[str, ...] = ()) -> Plan:
    """Compute the plan with the target's own env.py (child process).

    :raises PlanError: Alembic refused (e.g. multiple heads for 'head',
        downgrade past base, relative step not possible).
    :raises TargetProcessError: env.py or the database failed otherwise.
    """
    from .runner import TargetProcessError

    try:
        data = run_agent(target, {"op": "plan", "command": command,
                                          "revision": revision}, url=url).data
    except TargetProcessError as exc:
        if exc.error_type in ("CommandError", "RevisionError", "MultipleHeads",
                              "RangeNotAncestorError", "ResolutionError"):
            raise PlanError(str(exc)) from None
        raise
    plan = Plan(target=target.name, command=command, revision=revision,
                current_before=data["current_before"], current_after=data["current_after"],
                steps=[PlanStep(**s) for s in data["steps"]], sql=data["sql"],
                dialect=make_url(url).get_backend_name(), rehearsal=data["rehearsal"],
                unrendered=data.get("unrendered") or [],
                rehearsal_error=data.get("rehearsal_error"))
    plan.findings = [f.as_dict() for f in lint_sql(plan.sql, plan.dialect)]
    plan.findings += unseen_findings(plan)
    plan.findings = target.lint.apply(plan.findings)  # the tier's levels ([tiers.<tier>.lint])
    plan.warnings = plan_warnings(plan, heads)
    return plan
