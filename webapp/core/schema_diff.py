"""Differences between two schema snapshots (the agent's ``schema_snapshot``).

Used for a job's before/after diff in the changelog and for comparing two
targets (staging vs production, tenant vs tenant). What Alembic users know
as false alarms is normalised away before comparing:

- server defaults: quotes, casts (``'0'::integer``), outer parentheses and
  case; ``now()``, ``CURRENT_TIMESTAMP``, ``current_timestamp()`` and
  ``LOCALTIMESTAMP`` are one value, so are ``true``/``1`` and ``false``/``0``;
- types: compared as the dialect spells them when both snapshots are of one
  dialect, else by SQLAlchemy's generic type (``INTEGER`` vs ``INT(11)``,
  ``TINYINT(1)`` vs ``BOOLEAN``);
- enums: a native enum (PostgreSQL, MySQL) equals a non-native one across
  dialects (SQLAlchemy's ``VARCHAR`` as long as the longest label, with or
  without its ``CHECK (col IN (...))``);
- constraint and index names: matched by what they cover, not by name (each
  dialect names its own); within one dialect an index's new name is a
  rename; the index MySQL/MariaDB add by themselves for a foreign key is
  not compared with a dialect that has none; PostgreSQL's ``nextval(...)``
  of a SERIAL column is autoincrement, not a default.

A difference is ``{"kind", "object", "text", "before", "after"}``: ``kind``
one of add_table, drop_table, add_column, drop_column, alter_column,
add_index, drop_index, rename_index, add_constraint, drop_constraint,
alter_primary_key,
add_enum, drop_enum, alter_enum, add_sequence, drop_sequence, version;
``object`` the table or ``table.column``; ``before``/``after`` the values
compared (None where there is none; a whole table, normalised, for
add_table and drop_table).
"""

from __future__ import annotations

import re

_TIMESTAMP = {"now()", "current_timestamp", "current_timestamp()", "localtimestamp",
              "localtimestamp()", "transaction_timestamp()", "statement_timestamp()"}
_TRUE, _FALSE = {"true", "1", "'1'", "'t'", "'true'"}, {"false", "0", "'0'", "'f'", "'false'"}
_CAST = re.compile(r"::[a-z_ ]+(\[\])?(\(\d+(,\s*\d+)?\))?", re.IGNORECASE)
_IN_LIST = re.compile(r"^\(?\s*[\"`\[]?(\w+)[\"`\]]?\s+IN\s*\((.*)\)\s*\)?$", re.IGNORECASE | re.S)


def normal_default(default: str | None) -> str | None:
    """A server default as compared: ``"'0'::integer"`` -> ``"0"``,
    ``"(CURRENT_TIMESTAMP)"`` -> ``"current_timestamp"``, None stays None."""
    if default is None:
        return None
    text = _CAST.sub("", default.strip())
    while text.startswith("(") and text.endswith(")") and text.count("(") == text.count(")"):
        inner = text[1:-1].strip()
        if inner.count("(") != inner.count(")"):
            break
        text = inner
    lowered = text.lower()
    if lowered.startswith("nextval("):  # PostgreSQL's SERIAL: autoincrement, not a default
        return None
    if lowered in _TIMESTAMP:
        return "current_timestamp"
    if lowered in _TRUE:
        return "1"
    if lowered in _FALSE:
        return "0"
    if lowered == "null":
        return None
    if re.fullmatch(r"'-?\d+(\.\d+)?'", text):
        return text[1:-1]
    return text


def _enum_checks(table: dict) -> dict[str, str]:
    """{column: "ENUM(a, b)"} for the checks of ``table`` that are a
    non-native enum's ``col IN ('a', 'b')`` on a string column."""
    found = {}
    for check in table.get("checks", []):
        match = _IN_LIST.match(check["sqltext"].strip())
        if not match or match.group(1) not in table["columns"]:
            continue
        labels = [label.strip().strip("'") for label in match.group(2).split(",")]
        found[match.group(1)] = "ENUM(" + ", ".join(labels) + ")"
    return found


def _normal_table(table: dict, exact_types: bool) -> dict:
    """``table`` of a snapshot with its enums, types and defaults normalised."""
    enum_columns = _enum_checks(table)
    columns = {}
    for name, column in table["columns"].items():
        generic = enum_columns.get(name) if column["generic"].startswith(("VARCHAR", "CHAR")) \
            else None
        kind = column["type"] if exact_types and generic is None else \
            (generic or column["generic"])
        columns[name] = {"type": kind, "nullable": column["nullable"],
                         "default": normal_default(column["default"])}
    checks = [c for c in table.get("checks", []) if not (
        (m := _IN_LIST.match(c["sqltext"].strip())) and m.group(1) in enum_columns)]
    return dict(table, columns=columns, checks=checks)


def _column_text(name: str, column: dict) -> str:
    text = f"{name} {column['type']} {'NULL' if column['nullable'] else 'NOT NULL'}"
    return text + (f" DEFAULT {column['default']}" if column["default"] is not None else "")


def _diff(kind: str, obj: str, text: str, before=None, after=None) -> dict:
    return {"kind": kind, "object": obj, "text": text, "before": before, "after": after}


def _same_type(a: str, b: str, same_dialect: bool) -> bool:
    """Whether two normalised types match; across dialects a native enum
    equals SQLAlchemy's non-native one, a ``VARCHAR`` as long as its longest label."""
    if a == b:
        return True
    if same_dialect:
        return False
    for enum, other in ((a, b), (b, a)):
        if enum.startswith("ENUM(") and other.startswith("VARCHAR("):
            labels = enum[5:-1].split(", ")
            return other == f"VARCHAR({max(len(label) for label in labels)})"
    return False


def _compare_columns(table: str, a: dict, b: dict, same_dialect: bool = True) -> list[dict]:
    found = []
    for name in sorted(set(a) - set(b)):
        found.append(_diff("drop_column", f"{table}.{name}",
                           f"drop column {table}.{_column_text(name, a[name])}", a[name]))
    for name in sorted(set(b) - set(a)):
        found.append(_diff("add_column", f"{table}.{name}",
                           f"add column {table}.{_column_text(name, b[name])}", None, b[name]))
    for name in sorted(set(a) & set(b)):
        changes = [f"{what} {a[name][what]} → {b[name][what]}"
                   for what in ("type", "nullable", "default") if a[name][what] != b[name][what]
                   and not (what == "type" and _same_type(a[name][what], b[name][what],
                                                          same_dialect))]
        if not changes:
            continue
        found.append(_diff("alter_column", f"{table}.{name}",
                           f"alter column {table}.{name}: " + "; ".join(changes),
                           a[name], b[name]))
    return found


def _signature(kind: str, item: dict) -> tuple:
    if kind == "index":
        return ("index", tuple(item["columns"]), item["unique"], item.get("where"))
    if kind == "foreign key":
        return ("fk", tuple(item["columns"]), item["referred_table"],
                tuple(item["referred_columns"]), item.get("ondelete"))
    if kind == "unique constraint":
        return ("unique", tuple(item["columns"]))
    if kind == "check constraint":
        return ("check", re.sub(r"[\s\"`()]", "", item["sqltext"]).lower())
    return ("pk", tuple(item))


def _describe(kind: str, table: str, item: dict) -> str:
    name = f" {item['name']}" if isinstance(item, dict) and item.get("name") else ""
    if kind == "check constraint":
        return f"{kind}{name} on {table} ({item['sqltext']})"
    columns = ", ".join(item["columns"]) if isinstance(item, dict) else ", ".join(item)
    text = f"{kind}{name} on {table} ({columns})"
    if kind == "index" and item.get("unique"):
        text = "unique " + text
    if kind == "foreign key":
        text += f" -> {item['referred_table']} ({', '.join(item['referred_columns'])})"
    if kind == "index" and item.get("where"):
        text += f" WHERE {item['where']}"
    return text


def _compare_items(kind: str, table: str, a: list, b: list, same_dialect: bool) -> list[dict]:
    """Indexes or constraints of one table, matched by what they cover."""
    family = "index" if kind == "index" else "constraint"
    left = {_signature(kind, item): item for item in a}
    right = {_signature(kind, item): item for item in b}
    found = []
    for key in [k for k in left if k not in right]:
        found.append(_diff(f"drop_{family}", table, "drop " + _describe(kind, table, left[key]),
                           left[key]))
    for key in [k for k in right if k not in left]:
        found.append(_diff(f"add_{family}", table, "add " + _describe(kind, table, right[key]),
                           None, right[key]))
    if same_dialect and kind == "index":
        for key in [k for k in left if k in right]:
            old, new = left[key].get("name"), right[key].get("name")
            if old and new and old != new:
                found.append(_diff("rename_index", table,
                                   f"rename index {old} → {new} on {table}", old, new))
    return found


def _compare_table(name: str, a: dict, b: dict, same_dialect: bool) -> list[dict]:
    found = _compare_columns(name, a["columns"], b["columns"], same_dialect)
    if a["primary_key"] != b["primary_key"]:
        found.append(_diff("alter_primary_key", name,
                           f"primary key on {name} ({', '.join(a['primary_key'])}) → "
                           f"({', '.join(b['primary_key'])})", a["primary_key"],
                           b["primary_key"]))
    for kind, key in (("foreign key", "foreign_keys"), ("unique constraint", "unique"),
                      ("check constraint", "checks"), ("index", "indexes")):
        found.extend(_compare_items(kind, name, a.get(key, []), b.get(key, []), same_dialect))
    return found


def _unique_as_index(table: dict) -> dict:
    """MySQL/MariaDB reflect a unique constraint as a unique index too (and
    SQLite an unnamed one only as the index): compare both as unique indexes."""
    indexes = list(table.get("indexes", []))
    covered = {tuple(i["columns"]) for i in indexes if i["unique"]}
    for unique in table.get("unique", []):
        if tuple(unique["columns"]) not in covered:
            indexes.append({"name": unique.get("name"), "columns": unique["columns"],
                            "unique": True, "where": None})
    return dict(table, unique=[], indexes=indexes)


def _without_implicit_indexes(table: dict) -> dict:
    """``table`` without the index MySQL/MariaDB create by themselves for a
    foreign key (named after the constraint or its first column), for
    comparing with a dialect that has none."""
    implicit = {(tuple(fk["columns"]), name) for fk in table.get("foreign_keys", [])
                for name in (fk.get("name"), fk["columns"][0])}
    return dict(table, indexes=[i for i in table.get("indexes", []) if i["unique"]
                                or (tuple(i["columns"]), i.get("name")) not in implicit])


def _normal(snapshot: dict, same_dialect: bool) -> dict[str, dict]:
    tables = {}
    for name, table in snapshot["tables"].items():
        table = _unique_as_index(_normal_table(table, same_dialect))
        if not same_dialect and snapshot.get("dialect") in ("mysql", "mariadb"):
            table = _without_implicit_indexes(table)
        tables[name] = table
    return tables


def compare(before: dict, after: dict) -> list[dict]:
    """The differences (module docstring) that turn snapshot ``before`` into
    snapshot ``after``, tables in name order; [] when they match."""
    same_dialect = before.get("dialect") == after.get("dialect")
    a_tables, b_tables = _normal(before, same_dialect), _normal(after, same_dialect)
    found = []
    for name in sorted(set(a_tables) | set(b_tables)):
        if name not in b_tables:
            found.append(_diff("drop_table", name, f"drop table {name}", a_tables[name]))
        elif name not in a_tables:
            table = b_tables[name]
            text = f"add table {name} (" + ", ".join(
                _column_text(c, col) for c, col in table["columns"].items()) + ")"
            if table["indexes"]:
                text += " with " + "; ".join(_describe("index", name, i)
                                             for i in table["indexes"])
            found.append(_diff("add_table", name, text, None, table))
        else:
            found.extend(_compare_table(name, a_tables[name], b_tables[name], same_dialect))
    if same_dialect:  # enum types and sequences exist only where the dialect has them
        a_enums, b_enums = before.get("enums", {}), after.get("enums", {})
        for enum in sorted(set(a_enums) | set(b_enums)):
            if enum not in b_enums:
                found.append(_diff("drop_enum", enum, f"drop enum type {enum}", a_enums[enum]))
            elif enum not in a_enums:
                found.append(_diff("add_enum", enum, f"add enum type {enum} "
                                   f"({', '.join(b_enums[enum])})", None, b_enums[enum]))
            elif a_enums[enum] != b_enums[enum]:
                found.append(_diff("alter_enum", enum, f"alter enum type {enum}: "
                                   f"({', '.join(a_enums[enum])}) → ({', '.join(b_enums[enum])})",
                                   a_enums[enum], b_enums[enum]))
        a_seq, b_seq = set(before.get("sequences", [])), set(after.get("sequences", []))
        found.extend(_diff("drop_sequence", s, f"drop sequence {s}") for s in sorted(a_seq - b_seq))
        found.extend(_diff("add_sequence", s, f"add sequence {s}") for s in sorted(b_seq - a_seq))
    return found


def compare_versions(before: dict, after: dict) -> dict | None:
    """The version-table difference of two snapshots as a difference, or None."""
    if before.get("version", []) == after.get("version", []):
        return None
    text = (f"alembic_version {', '.join(before.get('version', [])) or 'base'} → "
            f"{', '.join(after.get('version', [])) or 'base'}")
    return _diff("version", "alembic_version", text, before.get("version", []),
                 after.get("version", []))


def differences(before: dict, after: dict) -> list[dict]:
    """:func:`compare`, then the version tables' difference (kind "version")
    last when they differ: what a job's changelog entry and a comparison of
    two targets show."""
    found = compare(before, after)
    version = compare_versions(before, after)
    return found + ([version] if version is not None else [])
