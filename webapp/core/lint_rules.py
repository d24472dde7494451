"""The rules of :mod:`webapp.core.lint`, over statements parsed by sqlglot.

Kept apart so that importing :mod:`webapp.core.lint` (for :class:`Finding`
and :func:`~webapp.core.lint.sql_sections`) does not import sqlglot.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from .lint_findings import Finding, sql_sections

#: written by the agent before a batch copy drops the old table (rehearsal SQL)
_COLUMNS_BEFORE = re.compile(r"^-- columns of (\S+) before the copy: (.*)$", re.M)
_DIALECTS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql",
             "sqlite": "sqlite", "mssql": "tsql", "oracle": "oracle"}
_VERSION_TABLE_RE = re.compile(r"alembic_version", re.I)
BATCH_PREFIX = "_alembic_tmp_"


def _chunks(sql: str) -> list[tuple[str | None, str]]:
    return [(s.revision, s.sql) for s in sql_sections(sql)]


def _short(node: exp.Expression, dialect: str) -> str:
    text = node.sql(dialect=dialect)
    return text if len(text) <= 200 else text[:197] + "..."


def _column_constraints(column: exp.ColumnDef) -> set[type]:
    return {type(c.args.get("kind")) for c in column.args.get("constraints") or []}


def _parse(chunk: str, read: str) -> list[exp.Expression]:
    try:
        statements = sqlglot.parse(chunk, read=read)
    except ParseError:
        statements = []
        for piece in chunk.split(";\n"):
            try:
                statements.extend(sqlglot.parse(piece, read=read))
            except ParseError:
                continue
    return [s for s in statements if s is not None]


def _table_name(node: exp.Expression | None) -> str | None:
    table = node.this if isinstance(node, exp.Schema) else node
    return table.name if isinstance(table, exp.Table) else None


def _created_columns(node: exp.Expression) -> tuple[str | None, list[str]]:
    """(table, column names) of a CREATE TABLE, else (None, [])."""
    if not (isinstance(node, exp.Create) and (node.args.get("kind") or "").upper() == "TABLE"):
        return None, []
    schema = node.this
    columns = [c.name for c in getattr(schema, "expressions", []) or []
               if isinstance(c, exp.ColumnDef)]
    return _table_name(schema), columns


def _dropped_table(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Drop) and (node.args.get("kind") or "").upper() == "TABLE":
        tables = node.args.get("tables") or [node.this]
        return _table_name(tables[0]) if tables else None
    return None


def _renamed_table(node: exp.Expression) -> tuple[str | None, str | None]:
    if isinstance(node, exp.Alter):
        for action in node.args.get("actions") or []:
            if isinstance(action, exp.AlterRename):
                return _table_name(node.this), _table_name(action.this)
    return None, None


def _copied_columns(node: exp.Expression) -> tuple[str | None, list[tuple[str, str]]]:
    """(into table, [(target column, source column)]) of INSERT ... SELECT."""
    if not (isinstance(node, exp.Insert) and isinstance(node.expression, exp.Select)):
        return None, []
    targets = [c.name for c in getattr(node.this, "expressions", []) or []]
    sources = [e.unalias().name if isinstance(e, exp.Alias) else e.name
               for e in node.expression.expressions]
    return _table_name(node.this), list(zip(targets, sources, strict=False))


@dataclass
class _Rebuild:
    table: str
    create: int  # statement index of CREATE TABLE _alembic_tmp_<table>
    columns: list[str]
    copied: list[tuple[str, str]] | None = None
    drop: int | None = None
    rename: int | None = None


def _batch_rebuilds(statements: list[exp.Expression]) -> list[_Rebuild]:
    """Complete batch copies (create tmp, copy, drop, rename back) in order."""
    open_: dict[str, _Rebuild] = {}
    done: list[_Rebuild] = []
    for i, node in enumerate(statements):
        created, columns = _created_columns(node)
        if created and created.startswith(BATCH_PREFIX):
            table = created[len(BATCH_PREFIX):]
            open_[table] = _Rebuild(table, i, columns)
            continue
        into, pairs = _copied_columns(node)
        if into and into.startswith(BATCH_PREFIX) and into[len(BATCH_PREFIX):] in open_:
            open_[into[len(BATCH_PREFIX):]].copied = pairs
            continue
        dropped = _dropped_table(node)
        if dropped in open_ and open_[dropped].drop is None:
            open_[dropped].drop = i
            continue
        old, new = _renamed_table(node)
        if old and old.startswith(BATCH_PREFIX) and new == old[len(BATCH_PREFIX):] \
                and new in open_ and open_[new].drop is not None:
            rebuild = open_.pop(new)
            rebuild.rename = i
            done.append(rebuild)
    return done


def findings_for(sql: str, dialect: str) -> list[Finding]:
    """What :func:`webapp.core.lint.lint_sql` returns (see there)."""
    read = _DIALECTS.get(dialect, dialect)
    findings: list[Finding] = []
    known: dict[str, list[str]] = {}  # table -> columns, from earlier CREATE TABLEs
    for revision, chunk in _chunks(sql):
        before = {m.group(1).strip('"'): [c.strip() for c in m.group(2).split(",")]
                  for m in _COLUMNS_BEFORE.finditer(chunk)}
        statements = [s for s in _parse(chunk, read) if not _VERSION_TABLE_RE.search(s.sql())]
        rebuilds = {r.create: r for r in _batch_rebuilds(statements)}
        consumed = {i for r in rebuilds.values() for i in (r.drop, r.rename)}
        for i, statement in enumerate(statements):
            if i in rebuilds:
                rebuild = rebuilds[i]
                findings.extend(_rebuild_findings(rebuild, before.get(rebuild.table)
                                                  or known.get(rebuild.table), revision))
                known[rebuild.table] = rebuild.columns
            elif i not in consumed:
                findings.extend(_check(statement, revision, read))
                table, columns = _created_columns(statement)
                if table:
                    known[table] = columns
    return findings


def _rebuild_findings(rebuild: _Rebuild, columns_before: list[str] | None,
                      revision: str | None) -> list[Finding]:
    """An info finding for the copy, plus a warning per column not copied
    and per column copied under a new name."""
    table = rebuild.table
    statement = f"batch copy of {table} ({BATCH_PREFIX}{table} renamed to {table})"
    found = [Finding("table_rebuild", revision, statement,
                     "SQLite batch mode rebuilds the table: its rows are copied, not lost; "
                     "the copy takes time in proportion to the table's size", level="info")]
    pairs = rebuild.copied or []
    sources = {s for _, s in pairs}
    if columns_before:
        for column in columns_before:
            if column not in sources:
                found.append(Finding(
                    "drop_column", revision, f"batch copy of {table} leaves out {column}",
                    f"drops column {table}.{column}: its values are lost and code still "
                    "reading it fails"))
    for target, source in pairs:
        if target != source:
            found.append(Finding(
                "rename", revision, f"batch copy of {table}: {source} -> {target}",
                "renames a column: code (and other services) using the old name break "
                "until they are deployed with the new one"))
    return found


def _check(node: exp.Expression, revision: str | None, dialect: str) -> list[Finding]:  # noqa: C901 (one branch per statement kind)
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
