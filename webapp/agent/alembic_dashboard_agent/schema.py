"""Schema snapshots and the models-vs-database drift, read in the target's process.

A *snapshot* is the database's schema as SQLAlchemy's inspector reflects it,
as plain JSON (so the dashboard can store it, compare two of them, and
compare two targets of different dialects):

``{"dialect": "postgresql", "version": ["4d9f6a3c1e53"], "tables": {name:
{"columns": {name: {"type", "generic", "nullable", "default"}},
"primary_key": [cols], "foreign_keys": [{"name", "columns", "referred_table",
"referred_columns", "ondelete"}], "unique": [{"name", "columns"}], "checks":
[{"name", "sqltext"}], "indexes": [{"name", "columns", "unique", "where"}]}},
"enums": {name: [labels]}, "sequences": [names]}``

``type`` is the dialect's spelling (``VARCHAR(255)``, ``TINYINT(1)``),
``generic`` SQLAlchemy's generic type of it (``as_generic()``), how two
dialects are compared. Only the connection's default schema is read; the
version table is reported as ``version`` (its rows), not as a table.

Both ops are read paths (:func:`.readonly.read_path`): the connection is one
the database refuses writes on.
"""

from __future__ import annotations

import io

from .readonly import read_only_request, read_only_url, read_path


def _type_names(column_type, dialect) -> tuple[str, str]:
    """(dialect spelling, generic spelling) of a reflected column type."""
    try:
        spelled = column_type.compile(dialect=dialect)
    except Exception:  # a type the dialect cannot compile back (rare reflected oddities)
        spelled = str(column_type)
    if type(column_type).__name__ == "TINYINT" and getattr(column_type, "display_width", 0) == 1:
        return spelled, "BOOLEAN"  # MySQL/MariaDB's BOOLEAN is TINYINT(1)
    enums = getattr(column_type, "enums", None)
    if enums:
        return spelled, "ENUM(" + ", ".join(enums) + ")"
    try:
        generic = str(column_type.as_generic())
    except NotImplementedError:
        generic = spelled
    return spelled, generic


def _columns(dialect, reflected: list[dict]) -> dict:
    columns = {}
    for column in reflected:
        spelled, generic = _type_names(column["type"], dialect)
        default = column.get("default")
        columns[column["name"]] = {
            "type": spelled, "generic": generic, "nullable": bool(column.get("nullable", True)),
            "default": None if default is None else str(default)}
    return columns


def _indexes(reflected: list[dict]) -> list[dict]:
    found = []
    for index in reflected:
        options = index.get("dialect_options") or {}
        where = options.get("postgresql_where") or options.get("sqlite_where")
        # "expressions" (SQLAlchemy 2) names every element, columns and expressions
        elements = index.get("expressions") or index.get("column_names") or []
        found.append({"name": index.get("name"),
                      "columns": [str(e) if e is not None else "<expression>" for e in elements],
                      "unique": bool(index.get("unique")),
                      "where": None if where is None else str(where)})
    return sorted(found, key=lambda i: (i["name"] or "", i["columns"]))


_KINDS = ("columns", "pk_constraint", "foreign_keys", "unique_constraints",
          "check_constraints", "indexes")


def _reflect_one(inspector, table: str) -> dict:
    """{kind: ``inspector.get_<kind>(table)``}; a kind the dialect lacks is empty."""
    raw = {}
    for kind in _KINDS:
        try:
            raw[kind] = getattr(inspector, f"get_{kind}")(table)
        except NotImplementedError:
            raw[kind] = {} if kind == "pk_constraint" else []
    return raw


def _reflect_many(inspector, tables: list[str]) -> dict[str, dict]:
    """{table: {kind: ...}} for ``tables`` with SQLAlchemy 2's
    ``get_multi_<kind>`` (one query per kind for the whole schema on
    PostgreSQL and MySQL instead of one per table), or per table on an
    older SQLAlchemy."""
    if not tables or not hasattr(inspector, "get_multi_columns"):
        return {table: _reflect_one(inspector, table) for table in tables}
    raw: dict[str, dict] = {table: {} for table in tables}
    for kind in _KINDS:
        try:
            found = getattr(inspector, f"get_multi_{kind}")(filter_names=tables)
        except NotImplementedError:
            found = {}
        for (_schema, table), value in found.items():
            if table in raw:
                raw[table][kind] = value
    for table in tables:
        raw[table].setdefault("pk_constraint", {})
        for kind in _KINDS:
            raw[table].setdefault(kind, [])
    return raw


def _table(dialect, raw: dict) -> dict:
    """One table of a snapshot from its reflected ``raw`` kinds."""
    pk = raw["pk_constraint"] or {}
    fks = [{"name": fk.get("name"), "columns": fk["constrained_columns"],
            "referred_table": fk["referred_table"], "referred_columns": fk["referred_columns"],
            "ondelete": (fk.get("options") or {}).get("ondelete")}
           for fk in raw["foreign_keys"]]
    uniques = [{"name": u.get("name"), "columns": u["column_names"]}
               for u in raw["unique_constraints"]]
    checks = [{"name": c.get("name"), "sqltext": str(c.get("sqltext"))}
              for c in raw["check_constraints"]]
    return {"columns": _columns(dialect, raw["columns"]),
            "primary_key": list(pk.get("constrained_columns") or []),
            "foreign_keys": sorted(fks, key=lambda f: (f["columns"], f["referred_table"])),
            "unique": sorted(uniques, key=lambda u: u["columns"]),
            "checks": sorted(checks, key=lambda c: (c["name"] or "", c["sqltext"])),
            "indexes": _indexes(raw["indexes"])}


def _sqlite_fingerprints(connection) -> dict[str, str]:
    """{table: the CREATE statements of it and its indexes} from SQLite's
    ``sqlite_master``: a table whose text is unchanged reflects the same."""
    from sqlalchemy import text

    rows = connection.execute(text(
        "SELECT tbl_name, group_concat(coalesce(sql, name), ';') FROM "
        "(SELECT tbl_name, sql, name FROM sqlite_master ORDER BY type, name) "
        "GROUP BY tbl_name")).all()
    return {name: sql for name, sql in rows}


def snapshot_connection(connection, version_table: str = "alembic_version",
                        cache: dict | None = None) -> dict:
    """The snapshot (module docstring) of the database behind ``connection``
    (a SQLAlchemy Connection, any dialect). ``cache``: a dict kept between
    snapshots of one SQLite database (the stairway takes hundreds): a table
    whose ``sqlite_master`` text did not change is not reflected again."""
    from sqlalchemy import inspect

    from .database import read_current

    inspector = inspect(connection)
    tables = [t for t in inspector.get_table_names() if t != version_table]
    fingerprints = _sqlite_fingerprints(connection) \
        if cache is not None and connection.dialect.name == "sqlite" else {}
    reflected, missing = {}, []
    for table in sorted(tables):
        key = (table, fingerprints.get(table))
        if key[1] is not None and key in cache:
            reflected[table] = cache[key]
        else:
            missing.append(table)
    for table, raw in _reflect_many(inspector, missing).items():
        reflected[table] = _table(inspector.dialect, raw)
        if fingerprints.get(table) is not None:
            cache[(table, fingerprints[table])] = reflected[table]
    reflected = dict(sorted(reflected.items()))
    snapshot = {"dialect": connection.dialect.name, "tables": reflected,
                "enums": {}, "sequences": []}
    if hasattr(inspector, "get_enums"):  # PostgreSQL's native enum types
        snapshot["enums"] = {e["name"]: list(e["labels"]) for e in inspector.get_enums()}
    if connection.dialect.supports_sequences:
        snapshot["sequences"] = sorted(inspector.get_sequence_names())
    has_version = version_table in inspector.get_table_names()
    snapshot["version"] = sorted(read_current(connection, version_table)) if has_version else []
    return snapshot


def snapshot_url(url: str, version_table: str = "alembic_version") -> dict:
    """The snapshot of the database of ``url``, read on a connection it opens
    read-only (:func:`.readonly.read_only_url`).

    :raises sqlalchemy.exc.OperationalError: the database cannot be reached."""
    from .database import engine

    eng = engine(read_only_url(url))
    try:
        with eng.connect() as connection:
            return snapshot_connection(connection, version_table)
    finally:
        eng.dispose()


@read_path(must_exist=True)
def schema_snapshot(request: dict) -> dict:
    """Op ``schema_snapshot`` (``url``, ``version_table``): ``{"snapshot": ...}``
    of the target database (module docstring).

    :raises readonly.DatabaseMissing: a SQLite file that does not exist."""
    return {"snapshot": snapshot_url(request["url"],
                                     request.get("version_table") or "alembic_version")}


class NoTargetMetadata(Exception):
    """env.py passes no ``target_metadata``: there are no models to compare with."""


@read_path(must_exist=True)
def drift(request: dict) -> dict:
    """Op ``drift``: what autogenerate would change to make the database match
    the models (env.py's ``target_metadata``), whether or not the database
    is at head — Alembic's ``compare_metadata`` on env.py's own configured
    context (its ``include_object``, ``compare_type``...), without the
    "target database is not up to date" check of ``alembic check``.

    :return: ``{"differences": [{"kind", "text", "destructive", "why"}],
        "current": [revisions]}``.
    :raises NoTargetMetadata: env.py sets no ``target_metadata``.
    :raises readonly.DatabaseMissing: a SQLite file that does not exist."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from .autogen import describe_diff
    from .config import alembic_config

    config = alembic_config(read_only_request(request), io.StringIO())
    script = ScriptDirectory.from_config(config)
    found: dict = {}

    def compare(rev, context):
        metadata = context.opts.get("target_metadata")
        if metadata is None:
            raise NoTargetMetadata("env.py passes no target_metadata to context.configure(), "
                                   "so there are no models to compare the database with")
        found["current"] = sorted(context.get_current_heads())
        differences = []
        for diff in compare_metadata(context, metadata):
            described = describe_diff(diff)
            differences.extend(described if isinstance(described, list) else [described])
        found["differences"] = differences
        return []

    with EnvironmentContext(config, script, fn=compare, as_sql=False, dont_mutate=True):
        script.run_env()
    if "differences" not in found:  # env.py never ran its migrations (offline-only env)
        raise NoTargetMetadata("env.py did not run its migrations online, so nothing "
                               "was compared")
    return found
