"""What plan lint reads and reports, without the parser: a revision's
:class:`SqlSection` of a plan's SQL (split at Alembic's markers) and a
:class:`Finding`. Imported by :mod:`webapp.core.lint` (the entry point) and
by :mod:`webapp.core.lint_rules` (the rules, which need sqlglot), so neither
imports the other's module back.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

#: every rule id lint reports (``not_seen``: a revision whose SQL lint could not read)
RULES = ("drop_table", "drop_column", "rename", "type_change", "not_null_without_default",
         "index_not_concurrent", "mysql_table_copy", "table_rebuild", "not_seen")
#: the levels a finding may have, worst first ("error" only from a tier's lint table)
LEVELS = ("error", "warning", "info")

_MARKER = re.compile(r"^-- Running (upgrade|downgrade) (.*?) -> (\S*)", re.M)


@dataclass(frozen=True)
class Finding:
    """One lint result. ``rule`` is a short id (``drop_table``, ``drop_column``,
    ``rename``, ``type_change``, ``not_null_without_default``,
    ``index_not_concurrent``, ``mysql_table_copy``, ``table_rebuild``);
    ``revision`` the revision whose SQL holds the statement (None when
    unknown); ``level`` is "warning" (data or uptime at risk) or "info"
    (worth knowing, e.g. a batch table rebuild) as lint reports it, or
    "error" when a tier's ``[tiers.<tier>.lint]`` table says so
    (:meth:`webapp.core.targets.LintPolicy.apply`)."""

    rule: str
    revision: str | None
    statement: str
    why: str
    level: str = "warning"

    def as_dict(self) -> dict:
        """JSON-ready form (stored with approval requests)."""
        return asdict(self)


@dataclass(frozen=True)
class SqlSection:
    """The SQL of one revision's step: ``revision`` (None before the first
    marker), ``marker`` (Alembic's ``Running upgrade A -> B`` line without
    the dashes, or "") and ``sql``."""

    revision: str | None
    marker: str
    sql: str


def sql_sections(sql: str) -> list[SqlSection]:
    """Split SQL at Alembic's ``-- Running upgrade|downgrade A -> B`` markers
    (offline SQL, and SQL captured from a rehearsal), dropping empty parts."""
    sections: list[SqlSection] = []
    last, revision, marker = 0, None, ""
    for match in _MARKER.finditer(sql):
        sections.append(SqlSection(revision, marker, sql[last:match.start()]))
        direction, down, up = match.groups()
        revision = up if direction == "upgrade" else down.strip()
        marker = match.group(0)[3:].strip()
        last = match.end()
    sections.append(SqlSection(revision, marker, sql[last:]))
    return [s for s in sections if s.sql.strip()]
