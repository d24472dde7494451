"""Op ``table_stats``: the live numbers of a plan's forecast, read from the
target database through a read-only connection (:mod:`.readonly`).

PostgreSQL: ``pg_class.reltuples`` (the planner's estimate of rows) and
``pg_total_relation_size`` (bytes, with indexes and TOAST), and the
sessions that would block a lock on the table now: those holding a lock on
it while idle in a transaction or in a transaction older than
``LONG_SECONDS``, and any running ``pg_dump``. MySQL/MariaDB:
``information_schema.TABLES`` (``TABLE_ROWS``, ``DATA_LENGTH +
INDEX_LENGTH``), the server version and the tables' column definitions
(``information_schema.COLUMNS``/``STATISTICS``: the online-DDL forecast
compares a MODIFY with them), and as blockers the sessions of this schema
with an InnoDB transaction idle or older than ``LONG_SECONDS``
(``INNODB_TRX`` + ``PROCESSLIST``) and any running mysqldump; the server
does not say which tables an open transaction has read, so they are listed
for every table (the account sees the sessions its privileges show).
SQLite: nothing (no statistics).
"""

from __future__ import annotations

from .database import engine
from .readonly import read_only_url, read_path

LONG_SECONDS = 5  # a transaction open longer than this counts as long

_PG_SIZES = ("SELECT c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid) "
             "FROM pg_class c WHERE c.relname = ANY(:names) AND c.relkind IN ('r', 'p') "
             "AND pg_table_is_visible(c.oid)")
_PG_BLOCKERS = (
    "SELECT DISTINCT c.relname, a.pid, a.usename, a.application_name, a.state, "
    "to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
    "left(a.query, 200) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE c.relname = ANY(:names) AND a.pid <> pg_backend_pid() AND (a.state = "
    "'idle in transaction' OR a.xact_start < now() - make_interval(secs => :long) "
    "OR a.application_name = 'pg_dump')")
_MYSQL_SIZES = ("SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH "
                "FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
_MYSQL_COLUMNS = (
    "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, "
    "c.CHARACTER_MAXIMUM_LENGTH, c.CHARACTER_OCTET_LENGTH, EXISTS (SELECT 1 FROM "
    "information_schema.STATISTICS s WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND "
    "s.TABLE_NAME = c.TABLE_NAME AND s.COLUMN_NAME = c.COLUMN_NAME) "
    "FROM information_schema.COLUMNS c WHERE c.TABLE_SCHEMA = DATABASE()")
_MYSQL_BLOCKERS = (
    "SELECT p.ID, p.USER, p.COMMAND, DATE_FORMAT(CONVERT_TZ(t.trx_started, @@session.time_zone, "
    "'+00:00'), '%Y-%m-%dT%H:%i:%sZ'), LEFT(COALESCE(p.INFO, t.trx_query, ''), 200) "
    "FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p "
    "ON p.ID = t.trx_mysql_thread_id WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE() "
    "AND (p.COMMAND = 'Sleep' OR t.trx_started < NOW() - INTERVAL :long SECOND) "
    "UNION SELECT p.ID, p.USER, p.COMMAND, NULL, LEFT(p.INFO, 200) "
    "FROM information_schema.PROCESSLIST p WHERE p.ID <> CONNECTION_ID() "
    "AND p.INFO LIKE 'SELECT /*!40001 SQL\\_NO\\_CACHE */%'")  # how mysqldump reads a table


def _mysql(conn, names: list[str]) -> dict:
    """The MySQL/MariaDB part of :func:`table_stats`."""
    from sqlalchemy import text

    wanted, found, columns = set(names), {}, {}
    for name, rows, size in conn.execute(text(_MYSQL_SIZES)):
        if name in wanted:
            found[name] = {"rows": rows, "bytes": size, "blockers": []}
    for table, column, kind, nullable, length, octets, indexed in conn.execute(
            text(_MYSQL_COLUMNS)):
        if table in wanted:
            columns.setdefault(table, {})[column] = {
                "type": kind, "nullable": nullable == "YES", "length": length,
                "octets": octets, "indexed": bool(indexed)}
    blockers = [{"pid": pid, "user": user, "application": None,
                 "state": "idle in transaction" if command == "Sleep" else command,
                 "since": since, "query": query}
                for pid, user, command, since, query in conn.execute(
                    text(_MYSQL_BLOCKERS), {"long": LONG_SECONDS})]
    for table in found.values():
        table["blockers"] = list(blockers)
    version = conn.execute(text("SELECT VERSION()")).scalar()
    return {"tables": found, "server_version": version, "columns": columns}


@read_path()
def table_stats(request: dict) -> dict:
    """Op ``table_stats`` (``tables``: names): ``{"tables": {name: {"rows",
    "bytes", "blockers": [{"pid", "user", "application", "state", "since",
    "query"}]}}}`` for the tables that exist (rows is an estimate: -1 on
    PostgreSQL for a table never analysed, reported as None); MySQL/MariaDB
    add ``"server_version"`` and ``"columns": {table: {column: {"type",
    "nullable", "length", "octets", "indexed"}}}``."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    names = sorted({str(n) for n in request.get("tables") or [] if n})
    url = request["url"]
    backend = make_url(url).get_backend_name()
    found: dict[str, dict] = {}
    if not names or backend not in ("postgresql", "mysql", "mariadb"):
        return {"tables": found}
    eng = engine(read_only_url(url))
    try:
        with eng.connect() as conn:
            if backend == "postgresql":
                for name, rows, size in conn.execute(text(_PG_SIZES), {"names": names}):
                    found[name] = {"rows": rows if rows >= 0 else None, "bytes": size,
                                   "blockers": []}
                for name, pid, user, app, state, since, query in conn.execute(
                        text(_PG_BLOCKERS), {"names": names, "long": LONG_SECONDS}):
                    if name in found:
                        found[name]["blockers"].append({
                            "pid": pid, "user": user, "application": app, "state": state,
                            "since": since, "query": query})
            else:
                return _mysql(conn, names)
    finally:
        eng.dispose()
    return {"tables": found}
