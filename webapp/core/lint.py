"""Plan lint: rules over the SQL of a plan or preview, read with a real SQL
parser (sqlglot), not regular expressions.

Each :class:`Finding` names the revision (from Alembic's ``-- Running
upgrade A -> B`` markers, in offline SQL and in SQL captured from a
rehearsal), the statement and why it matters. Alembic's SQLite batch copy
(``CREATE TABLE _alembic_tmp_x``, ``INSERT INTO _alembic_tmp_x ... SELECT
... FROM x``, ``DROP TABLE x``, ``ALTER TABLE _alembic_tmp_x RENAME TO x``)
is read as one table rebuild, not as a dropped and a renamed table; the
columns it does not copy are reported as dropped.
"""

from __future__ import annotations

from .lint_findings import Finding, SqlSection, sql_sections

__all__ = ["Finding", "SqlSection", "lint_sql", "sql_sections"]


def lint_sql(sql: str, dialect: str) -> list[Finding]:
    """Findings for every statement of ``sql`` in SQLAlchemy dialect ``dialect``,
    in statement order, each attributed to the revision whose chunk holds it.

    Statements the parser cannot read are skipped (they are reported by no rule).
    The rules (:mod:`webapp.core.lint_rules`) and sqlglot are imported on first
    use: job processes and workers that never lint do not pay for them.
    """
    from .lint_rules import findings_for

    return findings_for(sql, dialect)
