"""The MySQL/MariaDB online-DDL forecast checked on the real MariaDB: each
corpus statement is re-issued on small real tables with the forecast's
``ALGORITHM=..., LOCK=...`` appended (the server refuses a prediction that
is too optimistic), and with the next weaker algorithm and the next weaker
lock (which the server must refuse too, or the prediction was needlessly
pessimistic). At least 95% must match; mismatches are printed.

The server version and the live column definitions come from the agent's
``table_stats`` reader, as on the plan page. ``DROP INDEX ... ON t`` takes no
ALGORITHM clause on MariaDB, so it is re-issued as ``ALTER TABLE t DROP
INDEX``, the same operation."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from webapp.agent.alembic_dashboard_agent.table_stats import _mysql as mysql_stats
from webapp.core.forecast import forecast_sql
from webapp.core.forecast_mysql import ALGORITHMS, LOCKS

pytestmark = pytest.mark.mysql

# table -> its statements; parent is never changed by the corpus
SETUP = {
    "parent": ["CREATE TABLE parent (id INT PRIMARY KEY, code VARCHAR(20) UNIQUE) ENGINE=InnoDB",
               "INSERT INTO parent VALUES (1, 'a')"],
    "plain": ["CREATE TABLE plain (id INT PRIMARY KEY, v INT NULL) ENGINE=InnoDB",
              "INSERT INTO plain VALUES (1, 1)"],
    "t": ["CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50) NULL, n INT NULL, "
    "note TEXT NULL, parent_id INT NULL, created DATETIME NULL, code CHAR(3) NULL, "
    "req VARCHAR(10) NOT NULL DEFAULT '', status ENUM('a','b') NULL, INDEX ix_t_n (n), "
    "CONSTRAINT ck_t_n CHECK (n >= 0), CONSTRAINT fk_t_parent FOREIGN KEY (parent_id) "
    "REFERENCES parent (id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
          "INSERT INTO t (name, n, note, parent_id, created, code) "
          "VALUES ('x', 1, 'y', 1, NOW(), 'abc')"],
}

CORPUS = [
    "ALTER TABLE t ADD COLUMN c1 INTEGER NULL",
    "ALTER TABLE t ADD COLUMN c2 INTEGER DEFAULT 0",
    "ALTER TABLE t ADD COLUMN c3 INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE t ADD COLUMN c4 INTEGER NOT NULL",
    "ALTER TABLE t ADD COLUMN c5 DATETIME DEFAULT CURRENT_TIMESTAMP",
    "ALTER TABLE t ADD COLUMN c6 INTEGER NULL AFTER id",
    "ALTER TABLE t ADD COLUMN c7 INTEGER NULL FIRST",
    "ALTER TABLE t ADD COLUMN c8 INTEGER AS (n + 1) VIRTUAL",
    "ALTER TABLE t ADD COLUMN c9 INTEGER AS (n + 1) STORED",
    "ALTER TABLE t ADD COLUMN c10 VARCHAR(10) NULL, ADD UNIQUE INDEX uq_c10 (c10)",
    "ALTER TABLE plain ADD COLUMN seq INTEGER AUTO_INCREMENT UNIQUE",
    "ALTER TABLE t DROP COLUMN note",
    "ALTER TABLE t DROP COLUMN n",
    "ALTER TABLE t MODIFY name VARCHAR(60) NULL",
    "ALTER TABLE t MODIFY name VARCHAR(100) NULL",
    "ALTER TABLE t MODIFY name VARCHAR(20) NULL",
    "ALTER TABLE t MODIFY n BIGINT NULL",
    "ALTER TABLE t MODIFY n SMALLINT NULL",
    "ALTER TABLE t MODIFY name TEXT NULL",
    "ALTER TABLE t MODIFY note MEDIUMTEXT NULL",
    "ALTER TABLE t MODIFY created DATE NULL",
    "ALTER TABLE t MODIFY name VARCHAR(50) NOT NULL",
    "ALTER TABLE t MODIFY req VARCHAR(10) NULL",
    "ALTER TABLE t MODIFY n INTEGER NULL AFTER name",
    "ALTER TABLE t MODIFY status ENUM('a','b','c') NULL",
    "ALTER TABLE t MODIFY name VARCHAR(50) NULL COMMENT 'the name'",
    "ALTER TABLE t CHANGE name title VARCHAR(50) NULL",
    "ALTER TABLE t RENAME COLUMN name TO title",
    "ALTER TABLE t ALTER COLUMN n SET DEFAULT 5",
    "ALTER TABLE t ALTER COLUMN n DROP DEFAULT",
    "ALTER TABLE t ADD INDEX ix_t_name (name)",
    "ALTER TABLE t ADD INDEX ix_t_multi (name, n)",
    "CREATE INDEX ix_t_name ON t (name)",
    "CREATE UNIQUE INDEX ux_t_name ON t (name)",
    "ALTER TABLE t ADD CONSTRAINT uq_t_name UNIQUE (name)",
    "ALTER TABLE t ADD FULLTEXT INDEX ft_t_note (note)",
    "CREATE FULLTEXT INDEX ft_t_note ON t (note)",
    "DROP INDEX ix_t_n ON t",
    "ALTER TABLE t DROP INDEX ix_t_n",
    "ALTER TABLE t RENAME INDEX ix_t_n TO ix_t_n2",
    "ALTER TABLE t ADD CONSTRAINT fk2 FOREIGN KEY (parent_id) REFERENCES parent (id)",
    "ALTER TABLE t DROP FOREIGN KEY fk_t_parent",
    "ALTER TABLE t ADD CONSTRAINT ck_t_name CHECK (name <> '')",
    "ALTER TABLE t DROP CONSTRAINT ck_t_n",
    "ALTER TABLE t DROP PRIMARY KEY, ADD PRIMARY KEY (id, req)",
    "ALTER TABLE plain DROP PRIMARY KEY",
    "ALTER TABLE t RENAME TO t_renamed",
    "ALTER TABLE t ENGINE=InnoDB",
    "ALTER TABLE plain ENGINE=MyISAM",
    "ALTER TABLE t FORCE",
    "ALTER TABLE t CONVERT TO CHARACTER SET utf8mb3",
    "ALTER TABLE t DEFAULT CHARSET=utf8mb3",
    "ALTER TABLE t ROW_FORMAT=COMPACT",
    "ALTER TABLE t COMMENT='rows'",
    "ALTER TABLE t AUTO_INCREMENT=1000",
    "ALTER TABLE t ADD COLUMN c11 INTEGER NULL, DROP COLUMN note",
]
_REFUSED = {1845, 1846}  # ER_ALTER_OPERATION_NOT_SUPPORTED(_REASON)
_DROP_INDEX_RE = re.compile(r"^DROP INDEX (\w+) ON (\w+)$", re.I)


def _reset(conn, tables=("t",)) -> None:
    """Recreate ``tables`` as :data:`SETUP` has them (t also under its new name)."""
    for table in tables:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}" +
                             (", t_renamed" if table == "t" else ""))
    for table in tables:
        for statement in SETUP[table]:
            conn.exec_driver_sql(statement)


def _with(statement: str, algorithm: str, lock: str | None) -> str:
    if found := _DROP_INDEX_RE.match(statement):
        statement = f"ALTER TABLE {found.group(2)} DROP INDEX {found.group(1)}"
    sep = " " if statement.upper().startswith("CREATE") else ", "
    return statement + f"{sep}ALGORITHM={algorithm}" + (f"{sep}LOCK={lock}" if lock else "")


def _try(conn, statement: str) -> int | None:
    """None when the server ran it, else its error number."""
    try:
        conn.exec_driver_sql(statement)
        return None
    except sa.exc.DBAPIError as exc:
        return exc.orig.args[0]


def _check(conn, statement: str, predicted: str, table: str) -> str | None:
    """None when the prediction holds, else what went wrong (``table``: the
    one the statement changes, recreated after it)."""
    found = re.fullmatch(r"ALGORITHM=(\w+), LOCK=(\w+)", predicted or "")
    if not found:
        return f"no online-DDL prediction ({predicted})"
    algorithm, lock = found.groups()
    weaker = []
    if ALGORITHMS.index(algorithm) > 0:
        weaker.append(_with(statement, ALGORITHMS[ALGORITHMS.index(algorithm) - 1], None))
    if LOCKS.index(lock) > 0 and algorithm != "COPY":  # COPY never takes LOCK=NONE
        weaker.append(_with(statement, algorithm, LOCKS[LOCKS.index(lock) - 1]))
    for attempt in weaker:
        error = _try(conn, attempt)
        if error is None:
            _reset(conn, (table,))
            return f"too pessimistic: {attempt.split(statement[-8:])[-1]} works"
        if error not in _REFUSED:
            return f"error {error} on {attempt}"
    error = _try(conn, _with(statement, algorithm, lock))
    _reset(conn, (table,))
    return None if error is None else f"too optimistic: refused ({error})"


def test_corpus_forecast_matches_mariadb(mysql_url):
    engine = sa.create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    results = []
    try:
        with engine.connect() as conn:
            _reset(conn, ("parent", "plain", "t"))
            stats = mysql_stats(conn, ["t", "parent", "plain"])
            assert "mariadb" in stats["server_version"].lower()
            for statement in CORPUS:
                lines = forecast_sql(f"-- Running upgrade  -> r1\n\n{statement};\n", "mysql",
                                     server_version=stats["server_version"],
                                     columns=stats["columns"])
                predicted = lines[0]["lock"] if lines else None
                table = lines[0]["table"] if lines else "t"
                results.append((statement, predicted,
                                _check(conn, statement, predicted, table)))
    finally:
        engine.dispose()
    mismatches = [r for r in results if r[2]]
    for statement, predicted, problem in mismatches:
        print(f"MISMATCH {statement!r}: forecast {predicted}: {problem}")
    assert len(results) >= 40
    ratio = 1 - len(mismatches) / len(results)
    print(f"forecast matched MariaDB {stats['server_version']} on "
          f"{len(results) - len(mismatches)}/{len(results)} statements ({ratio:.0%})")
    assert ratio >= 0.95, mismatches
