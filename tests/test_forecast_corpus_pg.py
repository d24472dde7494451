"""The PostgreSQL lock forecast checked against the real server: each corpus
statement runs in a transaction (rolled back) on small committed tables, the lock its backend holds
on the table is read from ``pg_locks`` before the rollback, and it must be
the forecast's mode in at least 95% of cases (mismatches are printed).
Statements that must run outside a transaction (CONCURRENTLY) are observed
from a second session while the first waits on an open transaction."""

from __future__ import annotations

import threading

import psycopg
import pytest
import sqlalchemy as sa

from webapp.core import forecast_pg
from webapp.core.forecast import forecast_sql

pytestmark = pytest.mark.postgresql

SETUP = """
CREATE TABLE parent (id integer PRIMARY KEY, code varchar(20) UNIQUE);
CREATE TABLE t (id integer PRIMARY KEY, name varchar(50), n integer, note text,
                parent_id integer, created timestamp);
CREATE INDEX ix_t_n ON t (n);
ALTER TABLE t ADD CONSTRAINT ck_t_n CHECK (n >= 0);
ALTER TABLE t ADD CONSTRAINT fk_t_parent FOREIGN KEY (parent_id) REFERENCES parent (id);
INSERT INTO parent VALUES (1, 'a');
INSERT INTO t VALUES (1, 'x', 1, 'y', 1, now());
"""

# (statement, table whose lock is observed)
CORPUS = [
    ("ALTER TABLE t ADD COLUMN c1 integer", "t"),
    ("ALTER TABLE t ADD COLUMN c2 integer DEFAULT 0", "t"),
    ("ALTER TABLE t ADD COLUMN c3 integer NOT NULL DEFAULT 0", "t"),
    ("ALTER TABLE t ADD COLUMN c4 double precision DEFAULT random()", "t"),
    ("ALTER TABLE t ADD COLUMN c5 timestamp DEFAULT now()", "t"),
    ("ALTER TABLE t ADD COLUMN c6 uuid DEFAULT gen_random_uuid()", "t"),
    ("ALTER TABLE t ADD COLUMN c7 serial", "t"),
    ("ALTER TABLE t ADD COLUMN c8 integer GENERATED ALWAYS AS IDENTITY", "t"),
    ("ALTER TABLE t ADD COLUMN c9 integer REFERENCES parent (id)", "t"),
    ("ALTER TABLE t ADD COLUMN c10 integer REFERENCES parent (id)", "parent"),
    ("ALTER TABLE t ADD COLUMN c11 varchar(10) UNIQUE", "t"),
    ("ALTER TABLE t DROP COLUMN note", "t"),
    ("ALTER TABLE t ALTER COLUMN n TYPE bigint", "t"),
    ("ALTER TABLE t ALTER COLUMN name TYPE text", "t"),
    ("ALTER TABLE t ALTER COLUMN name TYPE varchar(100)", "t"),
    ("ALTER TABLE t ALTER COLUMN created TYPE date", "t"),
    ("ALTER TABLE t ALTER COLUMN name SET NOT NULL", "t"),
    ("ALTER TABLE t ALTER COLUMN name DROP NOT NULL", "t"),
    ("ALTER TABLE t ALTER COLUMN n SET DEFAULT 5", "t"),
    ("ALTER TABLE t ALTER COLUMN n DROP DEFAULT", "t"),
    ("ALTER TABLE t ALTER COLUMN n SET STATISTICS 500", "t"),
    ("ALTER TABLE t ADD CONSTRAINT ck_t_name CHECK (name <> '')", "t"),
    ("ALTER TABLE t ADD CONSTRAINT ck_t_name2 CHECK (name <> '') NOT VALID", "t"),
    ("ALTER TABLE t VALIDATE CONSTRAINT ck_t_n", "t"),
    ("ALTER TABLE t DROP CONSTRAINT ck_t_n", "t"),
    ("ALTER TABLE t ADD CONSTRAINT fk2 FOREIGN KEY (parent_id) REFERENCES parent (id)", "t"),
    ("ALTER TABLE t ADD CONSTRAINT fk3 FOREIGN KEY (parent_id) REFERENCES parent (id)",
     "parent"),
    ("ALTER TABLE t ADD CONSTRAINT fk4 FOREIGN KEY (parent_id) REFERENCES parent (id) "
     "NOT VALID", "t"),
    ("ALTER TABLE t VALIDATE CONSTRAINT fk_t_parent", "t"),
    ("ALTER TABLE t ADD CONSTRAINT uq_t_name UNIQUE (name)", "t"),
    ("ALTER TABLE t DROP CONSTRAINT t_pkey", "t"),
    ("ALTER TABLE t RENAME COLUMN name TO title", "t"),
    ("ALTER TABLE t RENAME TO t_renamed", "t"),
    ("ALTER TABLE t RENAME CONSTRAINT ck_t_n TO ck_t_n2", "t"),
    ("ALTER TABLE t SET (fillfactor = 70)", "t"),
    ("ALTER TABLE t CLUSTER ON ix_t_n", "t"),
    ("ALTER TABLE t DISABLE TRIGGER ALL", "t"),
    ("ALTER TABLE t SET UNLOGGED", "t"),
    ("CREATE INDEX ix_t_name ON t (name)", "t"),
    ("CREATE UNIQUE INDEX ux_t_name ON t (name)", "t"),
    ("CREATE INDEX ix_t_lower ON t (lower(name))", "t"),
    ("DROP INDEX ix_t_n", "t"),
    ("ALTER INDEX ix_t_n RENAME TO ix_t_n2", "ix_t_n"),
    ("DROP TABLE t", "t"),
    ("TRUNCATE t", "t"),
    ("COMMENT ON TABLE t IS 'rows'", "t"),
    ("COMMENT ON COLUMN t.name IS 'the name'", "t"),
    ("UPDATE t SET n = 2", "t"),
    ("DELETE FROM t WHERE n = 5", "t"),
    ("INSERT INTO t (id) VALUES (2)", "t"),
    ("CREATE TABLE child (id integer PRIMARY KEY, p integer REFERENCES parent (id))",
     "parent"),
]
CONCURRENT = [
    ("CREATE INDEX CONCURRENTLY ix_c_name ON t (name)", "t"),
    ("DROP INDEX CONCURRENTLY ix_t_n", "t"),
]

_LOCKS = ("SELECT mode FROM pg_locks WHERE pid = %s AND locktype = 'relation' "
          "AND relation = %s::oid")


def _strongest(modes) -> str | None:
    found = None
    for mode in modes:
        found = forecast_pg.stronger(found, forecast_pg.PG_LOCKS_MODES.get(mode))
    return found


def _predicted(statement: str, table: str) -> str | None:
    sql = f"-- Running upgrade  -> r1\n\n{statement};\n"
    modes = None
    for line in forecast_sql(sql, "postgresql"):
        if line["table"] == table or (table.startswith("ix_") and line["table"] == table):
            modes = forecast_pg.stronger(modes, line["lock"])
    if statement.startswith("DROP INDEX") or statement.startswith("ALTER INDEX"):
        # the forecast names the index; its table's lock is what DROP INDEX takes
        modes = next((line["lock"] for line in forecast_sql(sql, "postgresql")), None)
    return modes


def _observe(conn, statement: str, table: str) -> str | None:
    with conn.transaction(force_rollback=True):
        oid = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()[0]
        conn.execute(statement)
        if oid is None:
            oid = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()[0]
        pid = conn.info.backend_pid
        return _strongest(m for (m,) in conn.execute(_LOCKS, (pid, oid)))


def _observe_concurrent(dsn: str, statement: str, table: str) -> str | None:
    """Run ``statement`` (outside a transaction) while another session holds an
    open transaction that wrote the table: it waits for that transaction with
    its table lock held, and a third session reads that lock."""
    holder = psycopg.connect(dsn)
    runner = psycopg.connect(dsn, autocommit=True)
    watcher = psycopg.connect(dsn, autocommit=True)
    try:
        holder.execute("INSERT INTO t (id) VALUES (9)")  # an open transaction
        oid = watcher.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()[0]
        pid = runner.info.backend_pid
        thread = threading.Thread(target=runner.execute, args=(statement,), daemon=True)
        thread.start()
        seen = None
        for _ in range(200):  # up to 10 s
            rows = watcher.execute(_LOCKS.replace("AND relation", "AND granted AND relation"),
                                   (pid, oid)).fetchall()
            if rows:
                seen = _strongest(m for (m,) in rows)
                break
            threading.Event().wait(0.05)
        holder.rollback()
        thread.join(20)
        return seen
    finally:
        for c in (holder, runner, watcher):
            c.close()
        with psycopg.connect(dsn, autocommit=True) as cleanup:
            cleanup.execute("DROP INDEX IF EXISTS ix_c_name")
            cleanup.execute("CREATE INDEX IF NOT EXISTS ix_t_n ON t (n)")


def test_corpus_forecast_matches_pg_locks(pg_url):
    dsn = sa.engine.make_url(pg_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    results = []
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")  # gen_random_uuid on old servers
        conn.execute(SETUP)  # committed once: each statement's transaction rolls back
        conn.commit()
        for statement, table in CORPUS:
            try:
                observed = _observe(conn, statement, table)
            except psycopg.Error as exc:  # listed as a mismatch, the corpus goes on
                observed = f"error: {exc}".splitlines()[0]
            results.append((statement, table, _predicted(statement, table), observed))
    for statement, table in CONCURRENT:
        results.append((statement, table, _predicted(statement, table),
                        _observe_concurrent(dsn, statement, table)))
    mismatches = [r for r in results if r[2] != r[3]]
    for statement, table, predicted, observed in mismatches:
        print(f"MISMATCH {statement!r} on {table}: forecast {predicted}, observed {observed}")
    assert len(results) >= 40
    ratio = 1 - len(mismatches) / len(results)
    print(f"forecast matched pg_locks on {len(results) - len(mismatches)}/{len(results)} "
          f"statements ({ratio:.0%})")
    assert ratio >= 0.95, mismatches
