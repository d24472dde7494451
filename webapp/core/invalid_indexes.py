"""INVALID indexes on a PostgreSQL target, and dropping them as part of a plan.

A ``CREATE INDEX CONCURRENTLY`` that failed or timed out (the lock guard's
``lock_timeout``) leaves its index behind, marked INVALID
(``pg_index.indisvalid = false``): the index is maintained on every write but
never used, and running the revision again fails on its name. The next plan
on the target lists those that still exist on the live database (read
through a read-only session, :func:`read`), and may include dropping them
before the migration (:func:`with_invalid_indexes`): then the statements are
at the head of the plan's SQL, so the plan hash (and so a confirmation or an
approval) covers them, and the job runs them, under the lock guard, before
the migration (the agent's ``guarded.drop_invalid``).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import text

from .plan import Plan

_INVALID = text(
    "SELECT n.nspname, c.relname, t.relname FROM pg_index i "
    "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1, 2")
HEADER = ("-- Before the migration: drop the INVALID indexes a failed CREATE INDEX "
          "CONCURRENTLY left\n-- behind (drop_invalid_indexes; run by the job under the "
          "lock guard, outside a transaction)\n")


def read(engine) -> list[dict]:
    """The INVALID indexes of the database behind ``engine`` (a read-only
    engine, :class:`~webapp.core.status.EngineCache`): ``[{"schema", "name",
    "table"}]`` ordered by schema and name; ``[]`` for other dialects than
    PostgreSQL (which have no INVALID indexes).

    :raises sqlalchemy.exc.DBAPIError: the database cannot be read.
    """
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        rows = conn.execute(_INVALID).all()
    return [{"schema": r[0], "name": r[1], "table": r[2]} for r in rows]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_statement(index: dict) -> str:
    """``DROP INDEX CONCURRENTLY IF EXISTS "schema"."name"`` for one index of
    :func:`read` (the agent builds the same text)."""
    return f"DROP INDEX CONCURRENTLY IF EXISTS {_quoted(index['schema'])}.{_quoted(index['name'])}"


def drop_sql(indexes: list[dict]) -> str:
    """The SQL section that drops ``indexes`` (:data:`HEADER` then one
    statement a line), or "" for none."""
    if not indexes:
        return ""
    return HEADER + "".join(f"{drop_statement(i)};\n" for i in indexes) + "\n"


def with_invalid_indexes(plan: Plan, found: list[dict], drop: bool) -> Plan:
    """A copy of ``plan`` (never changed itself: plans are cached) listing
    ``found`` (:func:`read`'s indexes, each with ``left_by_job``) in
    ``invalid_indexes`` and a warning; with ``drop`` (and a migration to
    run: not for an empty plan or a stamp), also in ``drop_indexes``, their
    :func:`drop_sql` at the head of ``sql`` (so in the plan hash)."""
    if not found:
        return plan
    names = ", ".join(f"{i['schema']}.{i['name']} on {i['table']}"
                      + (f" (left by job {i['left_by_job']})" if i.get("left_by_job") else "")
                      for i in found)
    dropping = drop and not plan.is_empty and plan.command != "stamp"
    if dropping:
        warning = (f"this plan first drops the INVALID index(es) {names} (DROP INDEX "
                   "CONCURRENTLY, under the lock guard), then runs the migration.")
    else:
        warning = (f"INVALID index(es) left by a failed CREATE INDEX CONCURRENTLY still exist: "
                   f"{names}. They slow every write and are never used; running that "
                   "revision again fails on the name. Include dropping them in the plan "
                   "(drop_invalid_indexes) or drop them by hand.")
    return dataclasses.replace(
        plan, invalid_indexes=list(found), warnings=[*plan.warnings, warning],
        drop_indexes=[{k: i[k] for k in ("schema", "name", "table")} for i in found]
        if dropping else [],
        sql=drop_sql(found) + plan.sql if dropping else plan.sql)
