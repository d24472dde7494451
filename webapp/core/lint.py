"""Plan lint: rules over the SQL of a plan or preview, read with a real SQL
parser (sqlglot), not regular expressions.

Each :class:`Finding` names the revision (from Alembic's ``-- Running
upgrade A -> B`` markers in offline SQL), the statement and why it matters.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

_MARKER = re.compile(r"^-- Running (upgrade|downgrade) (.*?) -> (\S*)", re.M)
_DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql",
             "sqlite": "sqlite", "mssql": "tsql", "oracle": "oracle"}
_VERSION_TABLE_RE = re.compile(r"alembic_version", re.I)


@dataclass(frozen=True)
class Finding:
    """One lint result. ``rule`` is a short id (``drop_table``, ``drop_column``,
    ``rename``, ``type_change``, ``not_null_without_default``,
    ``index_not_concurrent``, ``mysql_table_copy``); ``revision`` the revision
    whose SQL holds the statement (None when unknown)."""

    rule: str
    revision: str | None
    statement: str
    why: str

    def as_dict(self) -> dict:
        """JSON-ready form (stored with approval requests)."""
        return asdict(self)


def _chunks(sql: str) -> list[tuple[str | None, str]]:
    """Split offline SQL into (revision, sql) chunks at Alembic's markers."""
    chunks: list[tuple[str | None, str]] = []
    last, revision = 0, None
    for match in _MARKER.finditer(sql):
        chunks.append((revision, sql[last:match.start()]))
        direction, down, up = match.groups()
        revision = up if direction == "upgrade" else down.strip()
        last = match.end()
    chunks.append((revision, sql[last:]))
    return [(r, c) for r, c in chunks if c.strip()]


def _short(node: exp.Expression, dialect: str) -> str:
    text = node.sql(dialect=dialect)
    return text if len(text) <= 200 else text[:197] + "..."


def _column_constraints(column: exp.ColumnDef) -> set[type]:
    return {type(c.args.get("kind")) for c in column.args.get("constraints") or []}


def lint_sql(sql: str, dialect: str) -> list[Finding]:
    """Findings for every statement of ``sql`` in SQLAlchemy dialect ``dialect``.

    Statements the parser cannot read are skipped (they are reported by no rule).
    """
    read = _DIALECTS.get(dialect, dialect)
    findings: list[Finding] = []
    for revision, chunk in _chunks(sql):
        try:
            statements = sqlglot.parse(chunk, read=read)
        except ParseError:
            statements = []
            for piece in chunk.split(";\n"):
                try:
                    statements.extend(sqlglot.parse(piece, read=read))
                except ParseError:
                    continue
        for statement in statements:
            if statement is None or _VERSION_TABLE_RE.search(statement.sql()):
                continue
            findings.extend(_check(statement, revision, read))
    return findings


def _check(node: exp.Expression, revision: str | None, dialect: str) -> list[Finding]:
    found: list[Finding] = []

    def add(rule: str, why: str) -> None:
        found.append(Finding(rule, revision, _short(node, dialect), why))

    if isinstance(node, exp.Drop) and (node.args.get("kind") or "").upper() == "TABLE":
        add("drop_table", "drops a table: its rows are lost and code still reading it fails")
    if isinstance(node, exp.Create) and (node.args.get("kind") or "").upper() == "INDEX" \
            and dialect == "postgres" and not node.args.get("concurrently"):
        add("index_not_concurrent", "CREATE INDEX without CONCURRENTLY blocks writes to the "
            "table while the index builds (use postgresql_concurrently=True outside a "
            "transaction)")
    if not isinstance(node, exp.Alter):
        return found
    for action in node.args.get("actions") or []:
        if isinstance(action, exp.Drop) and (action.args.get("kind") or "").upper() == "COLUMN":
            add("drop_column", "drops a column: its values are lost and code still reading "
                "it fails")
        elif isinstance(action, (exp.AlterRename, exp.RenameColumn)):
            add("rename", "renames: code (and other services) using the old name break "
                "until they are deployed with the new one")
        elif isinstance(action, exp.AlterColumn):
            if action.args.get("dtype") is not None:
                add("type_change", "changes a column type: may fail on, truncate or "
                    "rewrite existing values")
                if dialect == "mysql":
                    add("mysql_table_copy", "MySQL/MariaDB copies the whole table for a "
                        "type change, blocking writes for the copy's duration")
            if action.args.get("allow_null") is False:
                add("not_null_without_default", "SET NOT NULL on an existing table fails "
                    "if any row holds NULL (and scans the table)")
        elif isinstance(action, (exp.ModifyColumn, getattr(exp, "ChangeColumn", exp.ModifyColumn))):
            add("type_change", "MODIFY/CHANGE rewrites the column definition: may fail on "
                "or truncate existing values")
            if dialect == "mysql":
                add("mysql_table_copy", "MySQL/MariaDB copies the whole table for MODIFY/"
                    "CHANGE COLUMN, blocking writes for the copy's duration")
        elif isinstance(action, exp.ColumnDef):
            kinds = _column_constraints(action)
            if exp.NotNullColumnConstraint in kinds and \
                    exp.DefaultColumnConstraint not in kinds:
                add("not_null_without_default", "adds a NOT NULL column without a default to "
                    "an existing table: fails as soon as the table has rows")
    return found
