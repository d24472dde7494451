"""The blast-radius forecast of a plan's SQL: for each statement, the table it
touches, the lock it takes, whether it rewrites or scans the table and what
it blocks.

PostgreSQL statements are read with pglast (the real PostgreSQL parser) and
the rules of :mod:`webapp.core.forecast_pg`; MySQL/MariaDB statements are
read with sqlglot and the online-DDL rules of :mod:`webapp.core.forecast_mysql`
(algorithm and LOCK level by server version); SQLite batch operations are read
as table rebuilds (with lint's batch reader, sqlglot). :func:`forecast_sql`
reads the SQL only (``rows``/``bytes`` None, ``blockers`` []);
:func:`with_live_numbers` fills them from the live database through the agent
(read-only), and :func:`forecast_live` does both, with the MySQL/MariaDB
server's version and live column definitions deciding the algorithm.
"""

from __future__ import annotations

import re

from .lint_findings import sql_sections

_VERSION_TABLE_RE = re.compile(r"alembic_version", re.I)
_STATEMENT_MAX = 200
_MYSQL = ("mysql", "mariadb")
_ONLINE_DDL_RE = re.compile(r"ALGORITHM=\w+, LOCK=\w+")


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


_MYSQL_SPLIT_RE = re.compile(r";[ \t]*(?:\n|$)")


def _mysql(revision: str | None, chunk: str, version: str | None,
           columns: dict | None) -> list[dict]:
    from . import forecast_mysql

    lines = []
    for text in _MYSQL_SPLIT_RE.split(chunk):
        text = text.strip()
        if not text or _VERSION_TABLE_RE.search(text):
            continue
        for effect in forecast_mysql.effects_of(text, version=version, columns=columns):
            lines.append(_line(revision, text, effect.table, effect.lock, effect.blocks,
                               effect.rewrites))
    return lines


def forecast_sql(sql: str, dialect: str, *, server_version: str | None = None,
                 columns: dict | None = None) -> list[dict]:
    """The forecast lines of ``sql`` (a plan's SQL, split at Alembic's
    ``-- Running upgrade`` markers) in SQLAlchemy dialect ``dialect``:
    ``[{"revision", "statement", "table", "rows", "bytes", "lock", "blocks",
    "rewrites", "blockers"}]`` in statement order. ``lock`` is a PostgreSQL
    lock mode ("ACCESS EXCLUSIVE"...), on MySQL/MariaDB the online-DDL
    clause ("ALGORITHM=INPLACE, LOCK=NONE") or a metadata/row lock, "table
    rebuild (batch mode)" on SQLite, or None (no table lock, or a dialect not
    forecast); ``server_version`` (MySQL/MariaDB ``SELECT VERSION()``; None:
    the stronger of MariaDB's and MySQL's rules) and ``columns`` (live
    ``{table: {column: {"type", "nullable", "octets", "length",
    "indexed"}}}``; None: a MODIFY that names a type is read as a type
    change) are read on MySQL/MariaDB only; ``blocks``
    "nothing" | "writes" | "reads and writes"; ``rewrites`` "rewrite" |
    "scan" | "no". Statements of the version table are left out; statements
    that do not parse are skipped."""
    lines: list[dict] = []
    for section in sql_sections(sql):
        if dialect == "postgresql":
            lines += _postgresql(section.revision, section.sql)
        elif dialect == "sqlite":
            lines += _sqlite(section.revision, section.sql)
        elif dialect in _MYSQL:
            lines += _mysql(section.revision, section.sql, server_version, columns)
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


def _table_stats(target, tables: list[str], url: str) -> dict | None:
    """The agent's read-only op ``table_stats`` for ``tables``, or None when
    there is nothing to read or the database cannot be read."""
    from sqlalchemy.engine import make_url

    from .runner import TargetProcessError, run_agent

    if not tables or make_url(url).get_backend_name() not in ("postgresql", *_MYSQL):
        return None  # SQLite keeps no statistics: no agent is started for nothing
    try:
        return run_agent(target, {"op": "table_stats", "tables": tables}, url=url,
                         timeout=20).data
    except TargetProcessError:
        return None


def _fill(lines: list[dict], stats: dict | None) -> list[dict]:
    for line in lines:
        found = (stats or {}).get("tables", {}).get(line["table"] or "")
        if found:
            line.update(rows=found["rows"], bytes=found["bytes"], blockers=found["blockers"])
    return lines


def _tables(lines: list[dict]) -> list[str]:
    return sorted({line["table"] for line in lines if line["table"]})


def with_live_numbers(target, lines: list[dict], *, url: str) -> list[dict]:
    """``lines`` with ``rows``, ``bytes`` and ``blockers`` read from the live
    database at ``url`` (the agent's read-only op ``table_stats``:
    PostgreSQL ``pg_class``/``pg_stat_activity``, MySQL/MariaDB
    ``information_schema.TABLES``/``INNODB_TRX``/``PROCESSLIST``). A table the
    database does not have yet keeps None/[]; when the database cannot be
    read, ``lines`` come back unchanged (the forecast of the SQL still stands).

    :param target: the :class:`~webapp.core.targets.Target` read.
    """
    return _fill(lines, _table_stats(target, _tables(lines), url))


def forecast_live(target, sql: str, dialect: str, *, url: str) -> list[dict]:
    """:func:`forecast_sql` of ``sql`` with the live numbers of
    :func:`with_live_numbers`; on MySQL/MariaDB the server version and the
    live column definitions the agent read decide the algorithms (the
    forecast of the SQL alone stands when the database cannot be read)."""
    lines = forecast_sql(sql, dialect)
    stats = _table_stats(target, _tables(lines), url)
    if dialect in _MYSQL and stats and stats.get("server_version"):
        lines = forecast_sql(sql, dialect, server_version=stats["server_version"],
                             columns=stats.get("columns"))
    return _fill(lines, stats)


def _same_statement(a: str, b: str) -> bool:
    def norm(text: str) -> str:
        return " ".join(text.split()).rstrip(";").removesuffix("...")[:_STATEMENT_MAX - 3]

    return norm(a).lower() == norm(b).lower()


def _pg_mark(line: dict, observation: dict) -> str | None:
    """The mode a PostgreSQL rehearsal observed on ``line``'s table when the
    forecast was wrong (see :func:`rehearsal_marks`), else None."""
    from .forecast_pg import MODES

    if line["lock"] not in MODES or not line["table"]:
        return None
    held = observation.get("locks", {}).get(line["table"])
    taken = observation.get("taken", {}).get(line["table"])
    if taken and taken != line["lock"]:
        return taken
    if held in MODES and MODES.index(line["lock"]) > MODES.index(held):
        return held
    return None


NO_CLAUSE_ACCEPTED = "no ALGORITHM/LOCK clause accepted (it ran as written)"


def _mysql_mark(line: dict, observation: dict) -> str | None:
    """The online-DDL clause a MySQL/MariaDB rehearsal observed for
    ``line``'s statement when it is not the forecast one, else None."""
    if not _ONLINE_DDL_RE.fullmatch(line["lock"]):
        return None
    accepted = observation.get("online_ddl")
    if accepted == line["lock"]:
        return None
    return accepted or NO_CLAUSE_ACCEPTED


def rehearsal_marks(lines: list[dict], observed: list[dict] | None) -> dict[int, str]:
    """The forecast lines the rehearsal proved wrong: ``{index in lines:
    what was observed}``. ``observed`` is a rehearsal's ``observed_locks``:
    on PostgreSQL (the agent's ``LockWatch``) per statement the modes held
    right after it, ``locks``, and those it newly took, ``taken``; on
    MySQL/MariaDB (the agent's ``AlgorithmWatch``) ``online_ddl``, the first
    ``ALGORITHM=..., LOCK=...`` clause (most online first) the server
    accepted for it, None when it refused them all. A line is matched to the
    first unused observation of its revision with the same statement.
    PostgreSQL: it is wrong when the statement newly took another mode on
    the line's table than forecast, or when the forecast mode is stronger
    than anything held on it (the mark: that mode). MySQL/MariaDB: it is
    wrong when the accepted clause is not the forecast one (the mark: the
    accepted clause, or :data:`NO_CLAUSE_ACCEPTED`). Lines without a
    forecast lock, without a matching observation or whose table holds no
    lock any more (dropped) are not judged."""
    marks: dict[int, str] = {}
    used: set[int] = set()
    previous: tuple | None = None  # (revision, statement, observation) of the line before
    for index, line in enumerate(lines):
        if previous and previous[:2] == (line["revision"], line["statement"]):
            found = previous[2]  # another table of the same statement
        else:
            found = next((i for i, o in enumerate(observed or []) if i not in used
                          and o.get("revision") == line["revision"]
                          and _same_statement(o.get("statement") or "", line["statement"])),
                         None)
            if found is not None:
                used.add(found)
        previous = (line["revision"], line["statement"], found)
        if found is None or not line["lock"]:
            continue
        observation = observed[found]
        mark = _mysql_mark(line, observation) if "online_ddl" in observation \
            else _pg_mark(line, observation)
        if mark:
            marks[index] = mark
    return marks
