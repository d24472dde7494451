"""PostgreSQL statement-to-lock rules, over statements parsed by pglast (the
real PostgreSQL parser).

The rule tables (statement kind -> lock mode, rewrite/scan) are ours, taken
from PostgreSQL's documentation of ``ALTER TABLE``, ``CREATE INDEX`` and
"Explicit Locking" (PostgreSQL 11 and later: a constant or stable default
on ``ADD COLUMN`` no longer rewrites the table).
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

# weakest first; a statement with several sub-commands takes the strongest
MODES = ("ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
         "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE")
#: what other sessions' ordinary queries a mode blocks while it is held
BLOCKS = {"ACCESS SHARE": "nothing", "ROW SHARE": "nothing", "ROW EXCLUSIVE": "nothing",
          "SHARE UPDATE EXCLUSIVE": "nothing", "SHARE": "writes",
          "SHARE ROW EXCLUSIVE": "writes", "EXCLUSIVE": "writes",
          "ACCESS EXCLUSIVE": "reads and writes"}
#: pg_locks.mode -> our name ("AccessExclusiveLock" -> "ACCESS EXCLUSIVE")
PG_LOCKS_MODES = {m.title().replace(" ", "") + "Lock": m for m in MODES}

AT = enums.AlterTableType
_SHARE_UPDATE_EXCLUSIVE_CMDS = {AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions,
                                AT.AT_ClusterOn, AT.AT_DropCluster, AT.AT_ValidateConstraint,
                                AT.AT_SetRelOptions, AT.AT_ResetRelOptions}
_SHARE_ROW_EXCLUSIVE_CMDS = {AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableAlwaysTrig,
                             AT.AT_EnableReplicaTrig, AT.AT_EnableTrigAll,
                             AT.AT_DisableTrigAll, AT.AT_EnableTrigUser,
                             AT.AT_DisableTrigUser}
_REWRITE_CMDS = {AT.AT_SetLogged, AT.AT_SetUnLogged, AT.AT_SetTableSpace}
#: functions that are not volatile: as a column default they do not rewrite
_NOT_VOLATILE = {"now", "current_timestamp", "current_date", "lower", "upper", "length",
                 "coalesce", "concat", "to_char", "to_timestamp", "make_date", "abs",
                 "transaction_timestamp", "statement_timestamp"}
_SERIAL = {"serial", "bigserial", "smallserial", "serial4", "serial8", "serial2"}
#: type changes PostgreSQL makes without a rewrite (binary coercible)
_NO_REWRITE_TYPES = {"text", "varchar"}


@dataclass
class Effect:
    """What one statement does to one table: ``table`` (None: no table),
    ``index`` (an index named instead of its table: DROP INDEX), ``lock`` a
    :data:`MODES` name (None: no table lock), ``rewrites``: "rewrite",
    "scan" or "no"; ``blocks`` "nothing", "writes" or "reads and writes";
    ``new`` True when the table is created by the statement; ``outside``
    True when it must run outside a transaction (CONCURRENTLY)."""

    table: str | None
    lock: str | None
    rewrites: str = "no"
    index: str | None = None
    new: bool = False
    outside: bool = False

    @property
    def blocks(self) -> str:
        return "nothing" if self.new or self.lock is None else BLOCKS[self.lock]


def stronger(a: str | None, b: str | None) -> str | None:
    """The stronger of two :data:`MODES` (None is weaker than any)."""
    if a is None or b is None:
        return a or b
    return a if MODES.index(a) >= MODES.index(b) else b


def _worse(a: str, b: str) -> str:
    order = ("no", "scan", "rewrite")
    return a if order.index(a) >= order.index(b) else b


def _name(rangevar) -> str | None:
    return rangevar.relname if rangevar is not None else None


def _volatile_default(expr) -> bool:
    """True when a default expression calls a function not known as stable."""
    found = []

    def visit(node):
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower()
            if name not in _NOT_VOLATILE:
                found.append(name)
        if isinstance(node, ast.Node):
            for attr in node:
                value = getattr(node, attr)
                if isinstance(value, ast.Node):
                    visit(value)
                elif isinstance(value, tuple):
                    for item in value:
                        if isinstance(item, ast.Node):
                            visit(item)

    visit(expr)
    return bool(found)


def _type_name(type_name) -> str:
    return type_name.names[-1].sval.lower() if type_name is not None else ""


def _add_column(column) -> tuple[str, list[str]]:
    """(rewrites, referenced tables) of an ``ADD COLUMN`` definition."""
    rewrites, referenced = "no", []
    if _type_name(column.typeName) in _SERIAL:
        rewrites = "rewrite"
    for c in column.constraints or ():
        kind = c.contype
        if kind == enums.ConstrType.CONSTR_DEFAULT and _volatile_default(c.raw_expr):
            rewrites = "rewrite"
        elif kind in (enums.ConstrType.CONSTR_IDENTITY, enums.ConstrType.CONSTR_GENERATED):
            rewrites = "rewrite"
        elif kind in (enums.ConstrType.CONSTR_PRIMARY, enums.ConstrType.CONSTR_UNIQUE,
                      enums.ConstrType.CONSTR_CHECK):
            rewrites = _worse(rewrites, "scan")
        elif kind == enums.ConstrType.CONSTR_FOREIGN:
            referenced.append(_name(c.pktable))
    return rewrites, referenced


def _alter_cmd(cmd) -> tuple[str, str, list[str]]:  # noqa: C901 (one branch per sub-command)
    """(lock, rewrites, referenced tables) of one ``ALTER TABLE`` sub-command."""
    kind = cmd.subtype
    if kind == AT.AT_AddColumn:
        rewrites, referenced = _add_column(cmd.def_)
        return "ACCESS EXCLUSIVE", rewrites, referenced
    if kind == AT.AT_AlterColumnType:
        cheap = _type_name(cmd.def_.typeName) in _NO_REWRITE_TYPES and cmd.def_.raw_default is None
        return "ACCESS EXCLUSIVE", "no" if cheap else "rewrite", []
    if kind == AT.AT_SetNotNull:
        return "ACCESS EXCLUSIVE", "scan", []
    if kind == AT.AT_AddConstraint:
        c = cmd.def_
        if c.contype == enums.ConstrType.CONSTR_FOREIGN:
            return "SHARE ROW EXCLUSIVE", "no" if c.skip_validation else "scan", \
                [_name(c.pktable)]
        if c.contype == enums.ConstrType.CONSTR_CHECK:
            return "ACCESS EXCLUSIVE", "no" if c.skip_validation else "scan", []
        if c.contype in (enums.ConstrType.CONSTR_PRIMARY, enums.ConstrType.CONSTR_UNIQUE,
                         enums.ConstrType.CONSTR_EXCLUSION):
            return "ACCESS EXCLUSIVE", "no" if c.indexname else "scan", []
        return "ACCESS EXCLUSIVE", "no", []
    if kind == AT.AT_ValidateConstraint:
        return "SHARE UPDATE EXCLUSIVE", "scan", []
    if kind in _SHARE_UPDATE_EXCLUSIVE_CMDS:
        return "SHARE UPDATE EXCLUSIVE", "no", []
    if kind in _SHARE_ROW_EXCLUSIVE_CMDS:
        return "SHARE ROW EXCLUSIVE", "no", []
    if kind in _REWRITE_CMDS:
        return "ACCESS EXCLUSIVE", "rewrite", []
    return "ACCESS EXCLUSIVE", "no", []


def _alter_table(stmt) -> list[Effect]:
    lock, rewrites, referenced = None, "no", []
    for cmd in stmt.cmds:
        mode, how, refs = _alter_cmd(cmd)
        lock, rewrites = stronger(lock, mode), _worse(rewrites, how)
        referenced += refs
    table = _name(stmt.relation)
    if stmt.objtype == enums.ObjectType.OBJECT_INDEX:
        return [Effect(None, lock, index=table)]
    effects = [Effect(table, lock, rewrites)]
    effects += [Effect(r, "SHARE ROW EXCLUSIVE") for r in referenced if r and r != table]
    return effects


def _drop(stmt) -> list[Effect]:
    kind = stmt.removeType
    names = [obj[-1].sval if isinstance(obj, tuple) else None for obj in stmt.objects or ()]
    if kind == enums.ObjectType.OBJECT_TABLE:
        return [Effect(n, "ACCESS EXCLUSIVE") for n in names]
    if kind == enums.ObjectType.OBJECT_INDEX:
        mode = "SHARE UPDATE EXCLUSIVE" if stmt.concurrent else "ACCESS EXCLUSIVE"
        return [Effect(None, mode, index=n, outside=bool(stmt.concurrent)) for n in names]
    return [Effect(None, None)]


def _rename(stmt) -> list[Effect]:
    kind = stmt.renameType
    if kind == enums.ObjectType.OBJECT_INDEX:
        return [Effect(None, "SHARE UPDATE EXCLUSIVE", index=_name(stmt.relation))]
    if stmt.relation is not None:
        return [Effect(_name(stmt.relation), "ACCESS EXCLUSIVE")]
    return [Effect(None, None)]


def _create_table(stmt) -> list[Effect]:
    effects = [Effect(_name(stmt.relation), "ACCESS EXCLUSIVE", new=True)]
    for element in stmt.tableElts or ():
        constraints = element.constraints if isinstance(element, ast.ColumnDef) else (element,)
        for c in constraints or ():
            if isinstance(c, ast.Constraint) and c.contype == enums.ConstrType.CONSTR_FOREIGN:
                effects.append(Effect(_name(c.pktable), "SHARE ROW EXCLUSIVE"))
    return effects


def effects_of(stmt) -> list[Effect]:  # noqa: C901 (one branch per statement kind)
    """The tables one parsed statement (a pglast ``ast`` node) touches, with
    the lock each takes; ``[Effect(None, None)]`` for statements that lock
    no table (CREATE TYPE, SET, comments...)."""
    if isinstance(stmt, ast.AlterTableStmt):
        return _alter_table(stmt)
    if isinstance(stmt, ast.IndexStmt):
        mode = "SHARE UPDATE EXCLUSIVE" if stmt.concurrent else "SHARE"
        return [Effect(_name(stmt.relation), mode, "scan", outside=bool(stmt.concurrent))]
    if isinstance(stmt, ast.CreateStmt):
        return _create_table(stmt)
    if isinstance(stmt, ast.DropStmt):
        return _drop(stmt)
    if isinstance(stmt, ast.RenameStmt):
        return _rename(stmt)
    if isinstance(stmt, ast.TruncateStmt):
        return [Effect(_name(r), "ACCESS EXCLUSIVE") for r in stmt.relations]
    if isinstance(stmt, ast.CreateTrigStmt):
        return [Effect(_name(stmt.relation), "SHARE ROW EXCLUSIVE")]
    if isinstance(stmt, ast.CommentStmt) and stmt.objtype in (
            enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_COLUMN):
        obj = stmt.object
        names = [s.sval for s in obj] if isinstance(obj, tuple) else []
        table = names[-2] if stmt.objtype == enums.ObjectType.OBJECT_COLUMN and len(names) > 1 \
            else (names[-1] if names else None)
        return [Effect(table, "SHARE UPDATE EXCLUSIVE")]
    if isinstance(stmt, (ast.UpdateStmt, ast.DeleteStmt)):
        return [Effect(_name(stmt.relation), "ROW EXCLUSIVE", "scan")]
    if isinstance(stmt, ast.InsertStmt):
        return [Effect(_name(stmt.relation), "ROW EXCLUSIVE")]
    return [Effect(None, None)]


#: statements that are no part of the migration's effect (BEGIN, COMMIT, SET)
_NOT_FORECAST = (ast.TransactionStmt, ast.VariableSetStmt)


def parse(statement: str) -> list:
    """The pglast statement nodes of ``statement`` ([] when it does not parse),
    without transaction control and SET statements."""
    try:
        return [raw.stmt for raw in parse_sql(statement)
                if not isinstance(raw.stmt, _NOT_FORECAST)]
    except ParseError:
        return []
