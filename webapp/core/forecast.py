"""The blast-radius forecast of a plan's SQL: for each statement, the table it
touches, the lock it takes, whether it rewrites or scans the table and what
it blocks.

PostgreSQL statements are read with pglast (the real PostgreSQL parser) and
the rules of :mod:`webapp.core.forecast_pg`; SQLite batch operations are read
as table rebuilds (with lint's batch reader, sqlglot). Other dialects get no
lock forecast yet (``lock`` None). :func:`forecast_sql` reads the SQL only
(``rows``/``bytes`` None, ``blockers`` []); :func:`with_live_numbers` fills
them from the live database through the agent (read-only).
"""

from __future__ import annotations

import re

from .lint_findings import sql_sections

_VERSION_TABLE_RE = re.compile(r"alembic_version", re.I)
_STATEMENT_MAX = 200


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _STATEMENT_MAX else text[:_STATEMENT_MAX - 3] + "..."


def _line(revision, statement, table, lock, blocks, rewrites) -> dict:
    """One forecast line in the fixed API shape (``rows``/``bytes``/``blockers``
    filled later by :func:`with_live_numbers`)."""
    return {"revision": revision, "statement": _short(statement), "table": table,
            "rows": None, "bytes": None, "lock": lock, "blocks": blocks,
            "rewrites": rewrites, "blockers": []}


def _postgresql(revision: str | None, chunk: str) -> list[dict]:
    from pglast import split

    from . import forecast_pg

    lines = []
    try:
        statements = split(chunk)
    except Exception:  # pglast's splitter refuses the chunk: nothing forecast
        return lines
    for text in statements:
        if _VERSION_TABLE_RE.search(text):
            continue
        for stmt in forecast_pg.parse(text):
            for effect in forecast_pg.effects_of(stmt):
                lines.append(_line(revision, text, effect.table or effect.index,
                                   effect.lock, effect.blocks, effect.rewrites))
    return lines


def _sqlite(revision: str | None, chunk: str) -> list[dict]:
    from .lint_rules import BATCH_PREFIX, _batch_rebuilds, _parse

    statements = [s for s in _parse(chunk, "sqlite") if not _VERSION_TABLE_RE.search(s.sql())]
    rebuilds = {r.create: r for r in _batch_rebuilds(statements)}
    consumed = {i for r in rebuilds.values()
                for i in range(r.create, (r.rename or r.create) + 1)}
    lines = []
    for i, node in enumerate(statements):
        if i in rebuilds:
            table = rebuilds[i].table
            lines.append(_line(revision, f"batch copy of {table} ({BATCH_PREFIX}{table} "
                               f"renamed to {table})", table, "table rebuild (batch mode)",
                               "reads and writes", "rewrite"))
        elif i not in consumed:
            lines.append(_line(revision, node.sql(dialect="sqlite"), None,
                               "database write lock", "writes", "no"))
    return lines


def forecast_sql(sql: str, dialect: str) -> list[dict]:
    """The forecast lines of ``sql`` (a plan's SQL, split at Alembic's
    ``-- Running upgrade`` markers) in SQLAlchemy dialect ``dialect``:
    ``[{"revision", "statement", "table", "rows", "bytes", "lock", "blocks",
    "rewrites", "blockers"}]`` in statement order. ``lock`` is a PostgreSQL
    lock mode ("ACCESS EXCLUSIVE"...), "table rebuild (batch mode)" on
    SQLite, or None (no table lock, or a dialect not forecast); ``blocks``
    "nothing" | "writes" | "reads and writes"; ``rewrites`` "rewrite" |
    "scan" | "no". Statements of the version table are left out; statements
    that do not parse are skipped."""
    lines: list[dict] = []
    for section in sql_sections(sql):
        if dialect == "postgresql":
            lines += _postgresql(section.revision, section.sql)
        elif dialect == "sqlite":
            lines += _sqlite(section.revision, section.sql)
    return lines


def worst(lines: list[dict]) -> dict | None:
    """The line that blocks the most (then rewrites the most), or None."""
    order = {"nothing": 0, "writes": 1, "reads and writes": 2}
    how = {"no": 0, "scan": 1, "rewrite": 2}
    candidates = [line for line in lines if line["lock"]]
    if not candidates:
        return None
    return max(candidates, key=lambda line: (order.get(line["blocks"], 0),
                                             how.get(line["rewrites"], 0)))


def with_live_numbers(target, lines: list[dict], *, url: str) -> list[dict]:
    """``lines`` with ``rows``, ``bytes`` and ``blockers`` read from the live
    database at ``url`` (the agent's read-only op ``table_stats``:
    PostgreSQL ``pg_class``/``pg_stat_activity``, MySQL/MariaDB
    ``information_schema.TABLES``). A table the database does not have yet
    keeps None/[]; when the database cannot be read, ``lines`` come back
    unchanged (the forecast of the SQL still stands).

    :param target: the :class:`~webapp.core.targets.Target` read.
    """
    from sqlalchemy.engine import make_url

    from .runner import TargetProcessError, run_agent

    tables = sorted({line["table"] for line in lines if line["table"]})
    if not tables or make_url(url).get_backend_name() not in ("postgresql", "mysql",
                                                              "mariadb"):
        return lines  # SQLite keeps no statistics: no agent is started for nothing
    try:
        stats = run_agent(target, {"op": "table_stats", "tables": tables}, url=url,
                          timeout=20).data["tables"]
    except TargetProcessError:
        return lines
    for line in lines:
        found = stats.get(line["table"] or "")
        if found:
            line.update(rows=found["rows"], bytes=found["bytes"], blockers=found["blockers"])
    return lines
