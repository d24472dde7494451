"""MySQL/MariaDB online-DDL rules: for each statement, the InnoDB algorithm
(INSTANT / INPLACE / COPY) and LOCK level (NONE / SHARED / EXCLUSIVE) the
server would use, by server flavour and version, over statements parsed by
sqlglot.

The rule table (:data:`RULES`) is ours, taken from MariaDB's "InnoDB Online
DDL Operations" pages (10.3: instant ADD COLUMN at the end; 10.4: instant
ADD COLUMN anywhere, DROP COLUMN, reorder and VARCHAR extension within a
length class) and MySQL 8.0's "Online DDL Operations" (8.0.12: instant ADD
COLUMN at the end; 8.0.29: anywhere, and DROP COLUMN). The MariaDB rows are
checked on the real server by tests/test_forecast_corpus_mysql.py; MySQL's
rows are from its documentation only (no MySQL server in the tests).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

ALGORITHMS = ("INSTANT", "INPLACE", "COPY")  # weakest first
LOCKS = ("NONE", "SHARED", "EXCLUSIVE")
#: what other sessions' queries a LOCK level blocks while the ALTER runs (all
#: of them also wait on the exclusive metadata lock taken briefly at its end)
BLOCKS = {"NONE": "nothing", "SHARED": "writes", "EXCLUSIVE": "reads and writes"}
_HOW = ("no", "scan", "rewrite")


@dataclass(frozen=True)
class Step:
    """One ALTER's online-DDL verdict: ``algorithm`` an :data:`ALGORITHMS`
    name, ``lock`` a :data:`LOCKS` name, ``rewrites`` "no" | "scan" (reads
    the table, e.g. to build an index) | "rewrite" (rebuilds or copies it)."""

    algorithm: str
    lock: str
    rewrites: str = "no"

    def __or__(self, other: Step) -> Step:
        """The stronger of two steps, part by part (a multi-action ALTER)."""
        return Step(max(self.algorithm, other.algorithm, key=ALGORITHMS.index),
                    max(self.lock, other.lock, key=LOCKS.index),
                    max(self.rewrites, other.rewrites, key=_HOW.index))


INSTANT = Step("INSTANT", "NONE")
NO_REBUILD = Step("INPLACE", "NONE")
SCAN = Step("INPLACE", "NONE", "scan")
REBUILD = Step("INPLACE", "NONE", "rewrite")
REBUILD_SHARED = Step("INPLACE", "SHARED", "rewrite")
COPY = Step("COPY", "SHARED", "rewrite")

#: kind -> flavour -> [(first version with this behaviour, step)], oldest first
RULES: dict[str, dict[str, list[tuple[tuple[int, ...], Step]]]] = {
    "add_column": {"mariadb": [((0,), REBUILD), ((10, 3), INSTANT)],
                   "mysql": [((0,), REBUILD), ((8, 0, 12), INSTANT)]},
    "add_column_positioned": {"mariadb": [((0,), REBUILD), ((10, 4), INSTANT)],
                              "mysql": [((0,), REBUILD), ((8, 0, 29), INSTANT)]},
    "add_column_stored": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
    "add_column_auto_increment": {"mariadb": [((0,), REBUILD_SHARED)],
                                  "mysql": [((0,), REBUILD_SHARED)]},
    "drop_column": {"mariadb": [((0,), REBUILD), ((10, 4), INSTANT)],
                    "mysql": [((0,), REBUILD), ((8, 0, 29), INSTANT)]},
    "drop_column_indexed": {"mariadb": [((0,), REBUILD), ((10, 4), NO_REBUILD)],
                            "mysql": [((0,), REBUILD)]},
    "column_metadata": {"mariadb": [((0,), INSTANT)],  # rename, default, comment
                        "mysql": [((0,), NO_REBUILD), ((8, 0, 28), INSTANT)]},
    "column_reorder": {"mariadb": [((0,), REBUILD), ((10, 4), INSTANT)],
                       "mysql": [((0,), REBUILD)]},
    "varchar_extend": {"mariadb": [((0,), NO_REBUILD), ((10, 4), INSTANT)],
                       "mysql": [((0,), NO_REBUILD)]},
    "enum_append": {"mariadb": [((0,), INSTANT)], "mysql": [((0,), INSTANT)]},
    "type_change": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
    "null_change": {"mariadb": [((0,), REBUILD)], "mysql": [((0,), REBUILD)]},
    "add_index": {"mariadb": [((0,), SCAN)], "mysql": [((0,), SCAN)]},
    "add_fulltext": {"mariadb": [((0,), REBUILD_SHARED)], "mysql": [((0,), REBUILD_SHARED)]},
    "add_primary_key": {"mariadb": [((0,), REBUILD)], "mysql": [((0,), REBUILD)]},
    "drop_primary_key": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
    "add_foreign_key": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},  # checks on
    "add_check": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
    "drop_index": {"mariadb": [((0,), NO_REBUILD)], "mysql": [((0,), NO_REBUILD)]},
    "drop_foreign_key": {"mariadb": [((0,), NO_REBUILD), ((10, 3), INSTANT)],
                         "mysql": [((0,), NO_REBUILD)]},
    "drop_constraint": {"mariadb": [((0,), NO_REBUILD), ((10, 3), INSTANT)],
                        "mysql": [((0,), NO_REBUILD)]},
    "rename_index": {"mariadb": [((0,), NO_REBUILD), ((10, 5), INSTANT)],
                     "mysql": [((0,), INSTANT)]},
    "rename_table": {"mariadb": [((0,), Step("INSTANT", "EXCLUSIVE"))],
                     "mysql": [((0,), INSTANT)]},
    "rebuild": {"mariadb": [((0,), REBUILD)], "mysql": [((0,), REBUILD)]},  # FORCE, ROW_FORMAT
    "engine_change": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
    "table_metadata": {"mariadb": [((0,), INSTANT)],  # COMMENT, AUTO_INCREMENT
                       "mysql": [((0,), NO_REBUILD)]},
    "default_charset": {"mariadb": [((0,), INSTANT)], "mysql": [((0,), REBUILD_SHARED)]},
    "convert_charset": {"mariadb": [((0,), COPY)], "mysql": [((0,), COPY)]},
}
_UNKNOWN = "unknown"  # a server version not known: the stronger of both flavours


def flavour(version: str | None) -> tuple[str, tuple[int, ...]]:
    """``("mariadb" | "mysql" | "unknown", (major, minor, patch))`` of a server
    version string as ``SELECT VERSION()`` reports it ("10.11.19-MariaDB-0+deb12u1",
    "8.0.36"); None or an unreadable string is ``("unknown", ())``."""
    found = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    if not found:
        return _UNKNOWN, ()
    numbers = tuple(int(n) for n in found.groups())
    return ("mariadb" if "mariadb" in (version or "").lower() else "mysql"), numbers


def rule(kind: str, version: str | None) -> Step:
    """The :class:`Step` of a :data:`RULES` kind on a server ``version``; an
    unknown server gets the stronger of the newest MariaDB and MySQL rows."""
    name, numbers = flavour(version)
    if name == _UNKNOWN:
        return RULES[kind]["mariadb"][-1][1] | RULES[kind]["mysql"][-1][1]
    step = RULES[kind][name][0][1]
    for since, candidate in RULES[kind][name]:
        if numbers >= since:
            step = candidate
    return step


def lock_text(step: Step) -> str:
    """The forecast's ``lock`` text, also the clause that re-issues the
    statement with the prediction: ``"ALGORITHM=INPLACE, LOCK=NONE"``."""
    return f"ALGORITHM={step.algorithm}, LOCK={step.lock}"


@dataclass
class Effect:
    """What one statement does to one table: ``table``; ``step`` its
    online-DDL :class:`Step` (None: not an ALTER, see ``lock``); ``lock`` the
    forecast text; ``blocks``; ``rewrites``."""

    table: str | None
    lock: str | None
    blocks: str
    rewrites: str
    step: Step | None = None


def _norm_type(text: str) -> str:
    text = text.lower().replace("integer", "int")
    text = re.sub(r"\b(tinyint|smallint|mediumint|int|bigint)\(\d+\)", r"\1", text)
    return re.sub(r"\s+", "", text)


def _nullable(coldef: exp.ColumnDef) -> bool:
    for constraint in coldef.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.NotNullColumnConstraint):
            return bool(kind.args.get("allow_null"))
        if isinstance(kind, exp.PrimaryKeyColumnConstraint):
            return False
    return True


def _modify_kind(action: exp.ModifyColumn, old: dict | None) -> list[str]:
    """The kinds of a MODIFY/CHANGE, compared with the live column ``old``
    (``{"type", "nullable", "octets", "length"}``; None when unknown: a type
    given is then read as a type change, the safe side)."""
    coldef = action.this
    new_type = coldef.args.get("kind")
    kinds = []
    if old is None:
        return ["type_change"] if new_type is not None else ["column_metadata"]
    if new_type is not None and _norm_type(new_type.sql("mysql")) != _norm_type(old["type"]):
        kinds.append(_type_change_kind(new_type, old))
    if _nullable(coldef) != old["nullable"]:
        kinds.append("null_change")
    if coldef.args.get("position") or action.args.get("position"):
        kinds.append("column_reorder")
    return kinds or ["column_metadata"]


def _type_change_kind(new_type: exp.DataType, old: dict) -> str:
    old_type = _norm_type(old["type"])
    if new_type.this == exp.DataType.Type.VARCHAR and old_type.startswith("varchar("):
        new_len = int(new_type.expressions[0].this.this) if new_type.expressions else 0
        per_char = (old.get("octets") or 0) / max(old.get("length") or 1, 1)
        old_octets, new_octets = old.get("octets") or 0, new_len * per_char
        if new_len >= (old.get("length") or 0) and (old_octets > 255) == (new_octets > 255):
            return "varchar_extend"
    if new_type.this in (exp.DataType.Type.ENUM, exp.DataType.Type.SET):
        values = [e.sql("mysql").lower() for e in new_type.expressions]
        if _norm_type(new_type.sql("mysql")).startswith(old_type.rstrip(")")) and \
                len(values) >= old_type.count(",") + 1:
            return "enum_append"
    return "type_change"


def _add_constraint_kinds(action: exp.AddConstraint) -> list[str]:
    kinds = []
    for node in action.expressions:
        inner = node.expressions[0] if isinstance(node, exp.Constraint) and node.expressions \
            else node
        if isinstance(inner, exp.PrimaryKey | exp.PrimaryKeyColumnConstraint):
            kinds.append("add_primary_key")
        elif isinstance(inner, exp.ForeignKey):
            kinds.append("add_foreign_key")
        elif isinstance(inner, exp.CheckColumnConstraint):
            kinds.append("add_check")
        elif isinstance(inner, exp.IndexColumnConstraint) and \
                str(inner.args.get("kind") or "").upper() in ("FULLTEXT", "SPATIAL"):
            kinds.append("add_fulltext")
        else:
            kinds.append("add_index")
    return kinds


def _column_def_kinds(coldef: exp.ColumnDef) -> list[str]:
    kinds = []
    constraints = [c.args.get("kind") for c in coldef.args.get("constraints") or []]
    if any(isinstance(k, exp.ComputedColumnConstraint) and k.args.get("persisted")
           for k in constraints):
        kinds.append("add_column_stored")
    elif any(isinstance(k, exp.AutoIncrementColumnConstraint) for k in constraints):
        kinds.append("add_column_auto_increment")
    elif coldef.args.get("position"):
        kinds.append("add_column_positioned")
    else:
        kinds.append("add_column")
    if any(isinstance(k, exp.UniqueColumnConstraint) for k in constraints):
        kinds.append("add_index")
    if any(isinstance(k, exp.PrimaryKeyColumnConstraint) for k in constraints):
        kinds.append("add_primary_key")
    return kinds


def _drop_kind(action: exp.Drop, columns: dict) -> str:
    kind = str(action.args.get("kind") or "COLUMN").upper()
    if kind == "INDEX":
        return "drop_index"
    if kind == "FOREIGN KEY":
        return "drop_foreign_key"
    if kind in ("CONSTRAINT", "CHECK"):
        return "drop_constraint"
    name = action.this.name if action.this is not None else \
        (action.args.get("tables") or [exp.Table()])[0].name
    return "drop_column_indexed" if (columns.get(name) or {}).get("indexed") else "drop_column"


def _option_kinds(options: list) -> list[str]:
    kinds = []
    for option in options:
        if isinstance(option, exp.EngineProperty):
            kinds.append("rebuild" if option.name.lower() == "innodb" else "engine_change")
        elif isinstance(option, exp.CharacterSetProperty):
            kinds.append("default_charset")
        elif isinstance(option, exp.SchemaCommentProperty | exp.AutoIncrementProperty):
            kinds.append("table_metadata")
        else:  # ROW_FORMAT, KEY_BLOCK_SIZE, ...: a rebuild
            kinds.append("rebuild")
    return kinds


def alter_kinds(node: exp.Alter, columns: dict) -> list[str]:
    """The :data:`RULES` kinds of an ``ALTER TABLE``'s actions and options;
    ``columns`` is the live ``{column: {"type", "nullable", "octets",
    "length", "indexed"}}`` of its table ({} when unknown)."""
    actions = node.args.get("actions") or []
    kinds = _option_kinds(node.args.get("options") or [])
    drops_pk = any(isinstance(a, exp.DropPrimaryKey) for a in actions)
    for action in actions:
        if isinstance(action, exp.ColumnDef):
            kinds += _column_def_kinds(action)
        elif isinstance(action, exp.ModifyColumn):
            old_name = action.args.get("rename_from") or action.this.this
            kinds += _modify_kind(action, columns.get(old_name.name) if columns else None)
        elif isinstance(action, exp.RenameColumn | exp.AlterColumn):
            kinds.append("column_metadata")
        elif isinstance(action, exp.AddConstraint):
            kinds += [k for k in _add_constraint_kinds(action)
                      if not (drops_pk and k == "add_primary_key")]
        elif isinstance(action, exp.DropPrimaryKey):
            adds = any(isinstance(a, exp.AddConstraint) and "add_primary_key" in
                       _add_constraint_kinds(a) for a in actions)
            kinds.append("add_primary_key" if adds else "drop_primary_key")
        elif isinstance(action, exp.Drop):
            kinds.append(_drop_kind(action, columns))
        elif isinstance(action, exp.RenameIndex):
            kinds.append("rename_index")
        elif isinstance(action, exp.AlterRename):
            kinds.append("rename_table")
        else:  # FORCE and anything not read: a rebuild
            kinds.append("rebuild")
    return kinds


def _step_effect(table: str | None, kinds: list[str], version: str | None) -> Effect:
    step = rule(kinds[0], version)
    for kind in kinds[1:]:
        step = step | rule(kind, version)
    return Effect(table, lock_text(step), BLOCKS[step.lock], step.rewrites, step)


_CREATE_INDEX_RE = re.compile(r"^\s*CREATE\s+(UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\s+\S+"
                              r"\s+ON\s+`?(\w+)`?", re.I)
_CONVERT_RE = re.compile(r"^\s*ALTER\s+TABLE\s+`?(\w+)`?\s+CONVERT\s+TO\s+CHARACTER", re.I)
_RENAME_RE = re.compile(r"^\s*RENAME\s+TABLE\s+`?(\w+)`?", re.I)


def _command_effect(text: str, version: str | None) -> Effect | None:
    """Statements sqlglot keeps as a bare command (CREATE FULLTEXT INDEX,
    CONVERT TO CHARACTER SET, RENAME TABLE), read by their leading words."""
    if found := _CREATE_INDEX_RE.match(text):
        kind = "add_fulltext" if (found.group(1) or "").strip().upper() in (
            "FULLTEXT", "SPATIAL") else "add_index"
        return _step_effect(found.group(2), [kind], version)
    if found := _CONVERT_RE.match(text):
        return _step_effect(found.group(1), ["convert_charset"], version)
    if found := _RENAME_RE.match(text):
        return Effect(found.group(1), "exclusive metadata lock (brief)", "reads and writes", "no")
    return None


def effects_of(text: str, *, version: str | None = None,
               columns: dict | None = None) -> list[Effect]:
    """The :class:`Effect` of one MySQL/MariaDB statement ``text`` on a
    server ``version`` (``SELECT VERSION()``; None: unknown, the stronger of
    both flavours); ``columns``: live ``{table: {column: {...}}}`` (see
    :func:`alter_kinds`). A statement that does not parse gives []."""
    columns = columns or {}
    try:
        node = sqlglot.parse_one(text, read="mysql", error_level=sqlglot.ErrorLevel.IGNORE)
    except sqlglot.errors.SqlglotError:
        return []
    if node is None or isinstance(node, exp.Command):
        found = _command_effect(text, version)
        return [found] if found else []
    table = node.find(exp.Table)
    name = table.name if table is not None else None
    if isinstance(node, exp.Alter):
        kinds = alter_kinds(node, columns.get(name) or {})
        return [_step_effect(name, kinds, version)] if kinds else []
    if isinstance(node, exp.Create):
        if str(node.args.get("kind")).upper() == "INDEX":
            index = node.this
            table = index.args.get("table") if isinstance(index, exp.Index) else None
            return [_step_effect(table.name if table is not None else name,
                                 ["add_index"], version)]
        return [Effect(name, None, "nothing", "no")]  # a new table blocks no one
    if isinstance(node, exp.Drop):
        if str(node.args.get("kind")).upper() == "INDEX":
            on = node.args.get("cluster")
            return [_step_effect(on.this.name if on is not None else None, ["drop_index"],
                                 version)]
        return [Effect(name, "exclusive metadata lock (brief)", "reads and writes", "no")]
    if isinstance(node, exp.TruncateTable):
        return [Effect(name, "exclusive metadata lock", "reads and writes", "rewrite")]
    if isinstance(node, exp.Update | exp.Delete):
        return [Effect(name, "row locks", "writes", "scan")]
    if isinstance(node, exp.Insert):
        return [Effect(name, "row locks", "nothing", "no")]
    return []
