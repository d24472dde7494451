"""Issue 19 item 4 on the real MariaDB: a rehearsal re-issues each ALTER
TABLE / CREATE INDEX / DROP INDEX on the scratch copy with an explicit
``ALGORITHM=..., LOCK=...``, most online first; the first clause the server
accepts is recorded in ``observed_locks`` (``online_ddl``), and the plan page
marks a forecast line whose clause is not the one observed."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.common import add_user, login
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import token_headers

from webapp.agent.alembic_dashboard_agent.online_ddl import LADDER, NO_OP, clause, variants
from webapp.core import forecast
from webapp.core.runner import run_command
from webapp.core.targets import load_targets

pytestmark = [pytest.mark.mysql, pytest.mark.timeout(60)]

REVISIONS = [
    Rev("r000", None, upgrade='op.create_table("items", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("name", sa.String(50)), sa.Column("n", sa.Integer), '
        'mysql_engine="InnoDB")\n            op.create_index("ix_items_n", "items", ["n"])'),
    Rev("r001", "r000", "column", upgrade='op.add_column("items", sa.Column("note", '
        'sa.String(20)))'),
    Rev("r002", "r001", "index", upgrade='op.create_index("ix_items_name", "items", ["name"])'),
    Rev("r003", "r002", "type", upgrade='op.alter_column("items", "n", type_=sa.BigInteger, '
        'existing_nullable=True)'),
    Rev("r004", "r003", "drop", upgrade='op.drop_index("ix_items_n", "items")'),
]
PLAN = "/targets/shop/plan?command=upgrade&revision=heads"
INSTANT = "ALGORITHM=INSTANT, LOCK=NONE"
INPLACE = "ALGORITHM=INPLACE, LOCK=NONE"
COPY = "ALGORITHM=COPY, LOCK=SHARED"


def test_statements_get_the_ladder_of_clauses():
    """Which statements are probed, and how each clause is written."""
    alter = variants("ALTER TABLE t ADD COLUMN c INT;")
    assert [name for name, _ in alter] == [clause(a, lock) for a, lock in LADDER]
    assert alter[0][1] == "ALTER TABLE t ADD COLUMN c INT, ALGORITHM=INSTANT, LOCK=NONE"
    assert variants("CREATE UNIQUE INDEX ix ON t (a)")[1][1] == \
        "CREATE UNIQUE INDEX ix ON t (a) ALGORITHM=INPLACE LOCK=NONE"
    assert variants("DROP INDEX `ix` ON `t`")[0][1] == \
        "ALTER TABLE `t` DROP INDEX `ix`, ALGORITHM=INSTANT, LOCK=NONE"
    assert variants("ALTER TABLE t ADD COLUMN c INT", mariadb=False)[0][1] == \
        "ALTER TABLE t ADD COLUMN c INT, ALGORITHM=INSTANT"
    for other in ("INSERT INTO t VALUES (1)", "CREATE TABLE t (id INT)", "DROP TABLE t",
                  "ALTER TABLE t ADD COLUMN c INT, ALGORITHM=COPY", "UPDATE alembic_version "
                  "SET version_num='r1'"):
        assert variants(other) == [], other


def _table_id(conn, database: str) -> int:
    return conn.execute(sa.text("SELECT TABLE_ID FROM information_schema.INNODB_SYS_TABLES "
                                "WHERE NAME = :n"), {"n": f"{database}/t"}).scalar_one()


def test_a_refused_clause_changes_nothing(mysql_url):
    """MariaDB refuses a clause it cannot honour before doing any work: the
    table keeps its definition, its rows and its InnoDB table id (a rebuild,
    INPLACE or COPY, would give it a new one); the accepted clause then
    does the work."""
    engine = sa.create_engine(mysql_url, isolation_level="AUTOCOMMIT")
    database = sa.engine.make_url(mysql_url).database
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id INT PRIMARY KEY, n INT) ENGINE=InnoDB")
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 1), (2, 2)")
            before = (conn.exec_driver_sql("SHOW CREATE TABLE t").one()[1],
                      _table_id(conn, database))
            refused = []
            for name, text in variants("ALTER TABLE t MODIFY n BIGINT NULL"):
                try:
                    conn.exec_driver_sql(text)
                    break
                except sa.exc.DBAPIError as exc:
                    assert exc.orig.args[0] in (1845, 1846), exc
                    refused.append(name)
                    assert (conn.exec_driver_sql("SHOW CREATE TABLE t").one()[1],
                            _table_id(conn, database)) == before, name
            assert name == COPY and refused == [INSTANT, INPLACE, "ALGORITHM=INPLACE, "
                                                "LOCK=SHARED"]
            assert "bigint" in conn.exec_driver_sql("SHOW CREATE TABLE t").one()[1]
            assert _table_id(conn, database) != before[1]  # the COPY did rebuild it
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM t").scalar() == 2
    finally:
        engine.dispose()


def test_rehearsal_observes_online_ddl_and_marks_a_wrong_forecast(make_app, tmp_path,
                                                                  monkeypatch, mysql_url):
    ini = make_env(tmp_path / "env", REVISIONS)
    monkeypatch.setenv("OBSERVE_URL", mysql_url)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "OBSERVE_URL"}})
    run_command(load_targets(targets)["shop"], "upgrade", "r000", url=mysql_url)
    app = make_app(targets)
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")

    posted = client.post("/api/v1/targets/shop/rehearsals", json={
        "command": "upgrade", "revision": "heads"}, headers=token_headers(app, "ci", "operator"))
    assert posted.status_code == 201 and posted.json["passed"], posted.json
    observed = {o["revision"]: o for o in posted.json["observed_locks"]}
    assert observed["r001"]["statement"] == "ALTER TABLE items ADD COLUMN note VARCHAR(20)"
    assert observed["r001"]["online_ddl"] == INSTANT and observed["r001"]["refused"] == []
    assert observed["r002"]["statement"] == "CREATE INDEX ix_items_name ON items (name)"
    assert observed["r002"]["online_ddl"] == INPLACE
    assert observed["r002"]["refused"] == [INSTANT]
    assert observed["r003"]["online_ddl"] == COPY and len(observed["r003"]["refused"]) == 3
    assert observed["r004"]["statement"] == "DROP INDEX ix_items_n ON items"
    assert observed["r004"]["online_ddl"] in (INSTANT, INPLACE)
    assert NO_OP not in str(posted.json)
    # the real database was only read: still at r000, without the new column
    engine = sa.create_engine(mysql_url)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("items")}
    finally:
        engine.dispose()
    assert columns == {"id", "name", "n"}

    # the forecast agrees with the rehearsal: nothing marked
    lines = forecast.forecast_live(load_targets(targets)["shop"], _plan_sql(client), "mysql",
                                   url=mysql_url)
    by_revision = {line["revision"]: line for line in lines}
    assert by_revision["r003"]["lock"] == COPY and by_revision["r001"]["lock"] == INSTANT
    assert by_revision["r004"]["lock"] == observed["r004"]["online_ddl"]
    assert forecast.rehearsal_marks(lines, posted.json["observed_locks"]) == {}
    page = client.get(PLAN).get_data(as_text=True)
    assert "Rehearsed OK" in page and "forecast wrong: observed" not in page

    # a forecast made wrong on purpose (the type change said to be INPLACE): marked
    real = forecast.forecast_sql

    def wrong(sql, dialect, **kwargs):
        found = real(sql, dialect, **kwargs)
        for line in found:
            if line["revision"] == "r003":
                line["lock"] = INPLACE
        return found

    monkeypatch.setattr(forecast, "forecast_sql", wrong)
    page = client.get(PLAN).get_data(as_text=True)
    assert page.count("forecast wrong: observed") == 1
    assert f"forecast wrong: observed {COPY}" in page
    wrong_lines = [dict(line, lock=INPLACE) if line["revision"] == "r003" else line
                   for line in lines]
    assert forecast.rehearsal_marks(wrong_lines, posted.json["observed_locks"]) == {
        lines.index(by_revision["r003"]): COPY}
    none_accepted = [dict(o, online_ddl=None) for o in posted.json["observed_locks"]]
    assert forecast.rehearsal_marks(lines, none_accepted)[lines.index(by_revision["r001"])] \
        == forecast.NO_CLAUSE_ACCEPTED


def _plan_sql(client) -> str:
    return client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads").json["sql"]
