"""The stairway test's row sample: read from the target, copied to the
scratch copy, checked to survive each round trip.

- Op ``row_sample`` (a read path, :func:`.readonly.read_path`): up to
  ``rows`` rows of every table of the connection's default schema (not the
  version table), in foreign-key order, ordered by primary key. A row whose
  foreign key points at a row left out of the sample is left out too (the
  copy enforces the key), and counted in ``left_out``.
- :func:`load` puts a sample into the scratch copy, on the migration's own
  connection, before the walk (SQLite: the copy is a file copy, so every
  table is emptied first: the stairway's copy holds the schema and the
  sample only, on every dialect).
- :func:`read` and :func:`differences`: the checksums of every row of the
  copy's tables, and what a step changed in them.

Values travel as JSON (:func:`encode`): ``None``, booleans, integers,
finite floats and strings as they are; anything else as a one-key object
(``{"decimal": "1.50"}``, ``{"date": "2024-05-01"}``, ``{"datetime": ...}``,
``{"time": ...}``, ``{"timedelta": seconds}``, ``{"bytes": base64}``,
``{"uuid": ...}``, ``{"float": "nan"}``, ``{"json": value}`` for a JSON
column's object or list, ``{"text": str(value)}`` for any other type).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import uuid
from collections import Counter

from .database import engine
from .readonly import read_only_url, read_path

ROWS_MAX = 10_000  # rows per table at most (the dashboard's limit too)
READ_CAP = 100_000  # rows per table read back from the copy at most

_TYPED = (("datetime", datetime.datetime), ("date", datetime.date), ("time", datetime.time))


def encode(value):
    """``value`` (a driver's Python value) as JSON-safe data (module docstring)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    for tag, kind in _TYPED:  # datetime before date: a datetime is a date
        if isinstance(value, kind):
            return {tag: value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"timedelta": value.total_seconds()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, (dict, list)):
        return {"json": value}
    return {"text": str(value)}


def decode(value):
    """The Python value of :func:`encode`'s ``value``, to insert."""
    if not isinstance(value, dict):
        return value
    (tag, payload), = value.items()
    if tag in ("json", "text"):
        return payload
    for name, kind in _TYPED:
        if tag == name:
            return kind.fromisoformat(payload)
    return {"float": float, "decimal": decimal.Decimal, "uuid": uuid.UUID,
            "timedelta": lambda s: datetime.timedelta(seconds=s),
            "bytes": base64.b64decode}[tag](payload)


def _checksum(value) -> str:
    text = json.dumps(encode(value), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _kept(table, rows: list, sampled: dict) -> list:
    """``rows`` of ``table`` whose foreign keys point at sampled rows (or at
    tables not sampled, or are NULL)."""
    for fk in table.foreign_key_constraints:
        referred = sampled.get(fk.referred_table.name)
        if referred is None:
            continue
        names = [c.name for c in fk.columns]
        targets = [e.column.name for e in fk.elements]
        have = {tuple(r[t] for t in targets) for r in referred}
        rows = [r for r in rows if any(r[n] is None for n in names)
                or tuple(r[n] for n in names) in have]
    return rows


@read_path(must_exist=True)
def row_sample(request: dict) -> dict:
    """Op ``row_sample`` (``rows``: 0..:data:`ROWS_MAX`, ``version_table``):
    ``{"sample": [{"table", "columns": [names], "rows": [[encoded values]],
    "left_out": n}]}`` in foreign-key order (parents first).

    :raises ValueError: ``rows`` out of range.
    :raises readonly.DatabaseMissing: a SQLite file that does not exist."""
    from sqlalchemy import MetaData, select

    rows = request.get("rows")
    if type(rows) is not int or not 0 <= rows <= ROWS_MAX:
        raise ValueError(f"rows must be a whole number from 0 to {ROWS_MAX}")
    version_table = request.get("version_table") or "alembic_version"
    sample: list[dict] = []
    if not rows:
        return {"sample": sample}
    eng = engine(read_only_url(request["url"]))
    try:
        with eng.connect() as conn:
            metadata = MetaData()
            metadata.reflect(conn)
            sampled: dict[str, list] = {}
            for table in metadata.sorted_tables:
                if table.name == version_table:
                    continue
                query = select(table).order_by(*table.primary_key.columns).limit(rows)
                found = [dict(r._mapping) for r in conn.execute(query)]
                sampled[table.name] = found  # a self-reference checks against these
                kept = sampled[table.name] = _kept(table, found, sampled)
                columns = [c.name for c in table.columns]
                sample.append({"table": table.name, "columns": columns,
                               "rows": [[encode(r[c]) for c in columns] for r in kept],
                               "left_out": len(found) - len(kept)})
    finally:
        eng.dispose()
    return {"sample": sample}


def load(connection, sample: list[dict], version_table: str) -> dict[str, int]:
    """Insert ``sample`` (:func:`row_sample`'s) into the scratch copy behind
    ``connection``; SQLite: empty its tables first (it is a file copy).
    Returns ``{table: rows inserted}``.

    :raises sqlalchemy.exc.SQLAlchemyError: a row the copy refuses."""
    from sqlalchemy import MetaData, Table, inspect
    from sqlalchemy import table as named

    dialect = connection.dialect.name
    if dialect == "sqlite":  # children first, should env.py enforce foreign keys
        order = inspect(connection).get_sorted_table_and_fkc_names()
        for name, _ in reversed(order):
            if name is not None and name != version_table:
                connection.execute(named(name).delete())
    inserted: dict[str, int] = {}
    metadata = MetaData()
    for entry in sample:
        if not entry["rows"]:
            continue
        table = Table(entry["table"], metadata, autoload_with=connection)
        columns = [c for c in entry["columns"] if c in table.columns]
        connection.execute(table.insert(), [
            {c: decode(v) for c, v in zip(entry["columns"], row, strict=True) if c in columns}
            for row in entry["rows"]])
        inserted[table.name] = len(entry["rows"])
        if dialect == "postgresql":  # serial keys continue after the sample's
            _advance_sequences(connection, table)
    return inserted


def _advance_sequences(connection, table) -> None:
    """PostgreSQL: move the sequence of each integer key column of ``table``
    past the largest value inserted (a later insert must not collide)."""
    from sqlalchemy import Integer, text

    quote = connection.dialect.identifier_preparer.quote
    for column in table.primary_key.columns:
        if isinstance(column.type, Integer):
            connection.execute(text(
                f"SELECT setval(q.s, (SELECT max({quote(column.name)}) FROM "
                f"{quote(table.name)})) FROM pg_get_serial_sequence(:t, :c) AS q(s) "
                "WHERE q.s IS NOT NULL"), {"t": quote(table.name), "c": column.name})


def read(connection, snapshot: dict) -> dict:
    """``{table: {"key": [primary key columns], "columns": [names], "rows":
    [{column: checksum}]}}`` of every table of ``snapshot`` (the copy's
    schema now), up to :data:`READ_CAP` rows each."""
    from sqlalchemy import column, select, table

    found = {}
    for name, spec in snapshot["tables"].items():
        columns = list(spec["columns"])
        query = select(table(name, *[column(c) for c in columns])).limit(READ_CAP)
        rows = [{c: _checksum(v) for c, v in zip(columns, row, strict=True)}
                for row in connection.execute(query)]
        found[name] = {"key": spec["primary_key"], "columns": columns, "rows": rows}
    return found


def differences(before: dict, after: dict) -> list[str]:
    """What changed in the rows of ``before``'s tables (:func:`read`) by
    ``after``, over the columns present in both: ``"table t: 2 of 5 rows
    lost"`` (by primary key), ``"table t: 3 of 5 rows changed in column c"``,
    or without a primary key ``"... changed or lost in column c"``. A table
    gone is the schema comparison's finding, not repeated here."""
    found = []
    for name, old in sorted(before.items()):
        new = after.get(name)
        total = len(old["rows"])
        if new is None or not total:
            continue
        common = [c for c in old["columns"] if c in new["columns"]]
        key = old["key"]
        if key and key == new["key"] and all(k in common for k in key):
            now = {tuple(r[k] for k in key): r for r in new["rows"]}
            pairs = [(r, now.get(tuple(r[k] for k in key))) for r in old["rows"]]
            lost = sum(1 for _, r in pairs if r is None)
            if lost:
                found.append(f"table {name}: {lost} of {total} rows lost")
            for c in common:
                changed = sum(1 for o, n in pairs if n is not None and o[c] != n[c])
                if changed:
                    found.append(f"table {name}: {changed} of {total} rows changed in "
                                 f"column {c}")
            continue
        for c in common:
            missing = Counter(r[c] for r in old["rows"]) - Counter(r[c] for r in new["rows"])
            if missing:
                found.append(f"table {name}: {sum(missing.values())} of {total} rows "
                             f"changed or lost in column {c}")
    return found
