"""The stairway test (issue 21, item 1): for every pending revision, up,
down, up again on a scratch copy with the schema compared. A corpus of
seeded faults is caught on SQLite, MariaDB and PostgreSQL where the dialect
can express it; clean revisions (the demo's, the test fixtures') pass."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers

ROOT = Path(__file__).resolve().parents[1]

BASE = ('op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), '
        'sa.Column("name", sa.String(50), nullable=False, server_default="x"), '
        'sa.Column("owner_id", sa.Integer, sa.ForeignKey("owners.id")), '
        'sa.Column("note", sa.String(20)))')
OWNERS = 'op.create_table("owners", sa.Column("id", sa.Integer, primary_key=True))'
BATCH = 'with op.batch_alter_table("items") as b: '

# name -> (upgrade, downgrade, dialects, what the report must say); every
# body is one line (the fixture's revision template indents one line)
FAULTS = {
    "empty downgrade": (
        BATCH + 'b.alter_column("note", existing_type=sa.String(20), server_default="n")',
        "pass", None, "the downgrade changes nothing"),
    "downgrade forgets the index": (
        'op.create_index("ix_items_note", "items", ["note"]); op.add_column("items", '
        'sa.Column("extra", sa.Integer))',
        BATCH + 'b.drop_column("extra")', None, "indexes"),
    "column restored with another type": (
        BATCH + 'b.drop_column("note")',
        'op.add_column("items", sa.Column("note", sa.String(40)))', None, "column note: type"),
    "column restored with another default": (
        BATCH + 'b.drop_column("name")',
        'op.add_column("items", sa.Column("name", sa.String(50), nullable=False, '
        'server_default="y"))', None, "column name: default"),
    "column restored nullable": (
        BATCH + 'b.drop_column("name")',
        'op.add_column("items", sa.Column("name", sa.String(50), server_default="x"))',
        None, "column name: nullable"),
    "downgrade forgets the foreign key": (
        BATCH + 'b.drop_constraint("fk_owner", type_="foreignkey")',
        'pass', None, "foreign keys"),
    "downgrade leaves a table behind": (
        'op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))',
        'pass', None, "table audit: left behind"),
    "downgrade drops the wrong table": (
        'op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("audit"); op.drop_table("owners")', ("sqlite",),
        "table owners: missing"),
    "downgrade raises": (
        'op.add_column("items", sa.Column("extra", sa.Integer))',
        'raise RuntimeError("cannot go back")', None, "the downgrade fails"),
    "second upgrade fails": (
        'op.execute("CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY)"); '
        'op.create_table("ledger", sa.Column("id", sa.Integer, primary_key=True))',
        'op.drop_table("audit")', None, "table ledger: left behind"),
    "unique constraint not restored": (
        BATCH + 'b.drop_constraint("uq_items_name", type_="unique")',
        'pass', None, "unique"),
    "check constraint not restored": (
        BATCH + 'b.drop_constraint("ck_items_code", type_="check")', 'pass',
        ("postgresql", "mysql"), "checks"),
    "enum type left behind": (
        'op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True), '
        'sa.Column("kind", sa.Enum("a", "b", name="tag_kind")))',
        'op.drop_table("tags")', ("postgresql",), "enum types"),
    "sequence left behind": (
        'op.execute("CREATE SEQUENCE ticket_numbers")', 'pass', ("postgresql",),
        "sequences"),
}

NAMED = ('op.create_table("items", sa.Column("id", sa.Integer, primary_key=True), '
         'sa.Column("name", sa.String(50), nullable=False, server_default="x"), '
         'sa.Column("owner_id", sa.Integer), sa.Column("note", sa.String(20)), '
         'sa.Column("code", sa.String(5)), '
         'sa.ForeignKeyConstraint(["owner_id"], ["owners.id"], name="fk_owner"), '
         'sa.UniqueConstraint("name", name="uq_items_name"), '
         'sa.CheckConstraint("code <> \'bad\'", name="ck_items_code"))')


def fault_env(root: Path, upgrade: str, downgrade: str) -> Path:
    return make_env(root, [
        Rev("r000", None, "owners", upgrade=OWNERS, downgrade='op.drop_table("owners")'),
        Rev("r001", "r000", "items", upgrade=NAMED, downgrade='op.drop_table("items")'),
        Rev("r002", "r001", "the fault", upgrade=upgrade, downgrade=downgrade)])


def dialect_url(dialect: str, request, tmp_path: Path) -> str:
    if dialect == "sqlite":
        return sqlite_url(tmp_path / "t.db")
    return request.getfixturevalue("mysql_url" if dialect == "mysql" else "pg_url")


def stairway(app, headers, target: str = "t", revision: str = "heads", **extra):
    answer = app.test_client().post(f"/api/v1/targets/{target}/stairway", headers=headers,
                                    json={"command": "upgrade", "revision": revision, **extra})
    assert answer.status_code == 201, answer.json["detail"][-1500:]
    return answer.json


def target_app(make_app, tmp_path, monkeypatch, ini: Path, url: str, **entry):
    monkeypatch.setenv("T_URL", url)
    return make_app(write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL", **entry}}))


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_the_seeded_faults_are_caught(make_app, tmp_path, monkeypatch, request, dialect):
    caught, missed = [], []
    for number, (name, (upgrade, downgrade, dialects, says)) in enumerate(FAULTS.items()):
        if dialects is not None and dialect not in dialects:
            continue
        root = tmp_path / f"f{number}"
        url = dialect_url(dialect, request, root) if dialect == "sqlite" else None
        if url is None:  # one server database per dialect, emptied by each copy's upgrade
            url = dialect_url(dialect, request, tmp_path)
        app = target_app(make_app, root, monkeypatch, fault_env(root / "env", upgrade,
                                                                downgrade), url)
        report = stairway(app, token_headers(app, f"olga{number}", "operator"))
        by_revision = {r["revision"]: r for r in report["revisions"]}
        fault = by_revision.get("r002")
        text = " | ".join((fault or {}).get("differences", []) + [(fault or {}).get("error")
                                                                   or ""])
        clean = [by_revision[r]["passed"] for r in ("r000", "r001")]
        if fault and not fault["passed"] and says in text and all(clean) \
                and report["passed"] is False:
            caught.append(name)
        else:
            missed.append((name, report))
    assert not missed, missed
    assert len(caught) >= (12 if dialect == "postgresql" else 10), caught


# the row sample's corpus: the target is at r001 with rows in it, r002 is clean,
# r003 a data-destroying round trip (the downgrade re-creates the dropped column
# empty: the schema is restored, the data is not), r004 an upgrade that only
# works on an empty table (a unique index over duplicated data). No batch
# operation: on SQLite those make the plan itself a rehearsal on a full copy of
# the file, where r004 fails before any stairway (the plan page says so).
READINGS = ('op.create_table("readings", sa.Column("id", sa.Integer, primary_key=True), '
            'sa.Column("taken", sa.Date), sa.Column("at", sa.DateTime), '
            'sa.Column("amount", sa.Numeric(10, 2)), sa.Column("blob", sa.LargeBinary), '
            'sa.Column("ratio", sa.Float))')
ROW_FAULTS = [
    Rev("r002", "r001", "clean", upgrade='op.add_column("items", sa.Column("extra", '
        'sa.String(5), server_default="e")); op.add_column("readings", sa.Column("flag", '
        'sa.Integer, server_default="0"))',
        downgrade='op.drop_column("items", "extra"); op.drop_column("readings", "flag")'),
    Rev("r003", "r002", "data-destroying round trip", upgrade='op.drop_column("items", "note")',
        downgrade='op.add_column("items", sa.Column("note", sa.String(20)))'),
    Rev("r004", "r003", "only works on an empty table",
        upgrade='op.create_index("ux_items_code", "items", ["code"], unique=True)',
        downgrade='op.drop_index("ux_items_code", table_name="items")'),
]


def stairway_from_the_plan_page(app) -> dict:
    """The stairway test of ``upgrade heads`` on target t run from its plan
    page's form, rows as the form's field starts (the targets file's); a bad
    value refused first. The result as stored, after the page showed it."""
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")
    html = client.get("/targets/t/plan?command=upgrade&revision=heads").get_data(as_text=True)
    field = re.search(r'<input type="number" name="rows"[^>]*>', html)
    assert field and 'max="10000"' in field.group(0), html[-3000:]
    rows = re.search(r'value="(\d+)"', field.group(0)).group(1)
    form = {"csrf_token": csrf_from(html), "command": "upgrade", "revision": "heads",
            "plan_hash": re.search(r'name="plan_hash" value="(\w+)"', html).group(1)}
    bad = client.post("/targets/t/stairway", data={**form, "rows": "-3"})
    assert bad.status_code == 400 and "rows must be a whole number from 0 to 10000" in \
        bad.get_data(as_text=True)
    assert client.post("/targets/t/stairway", data={**form, "rows": rows}).status_code == 303
    shown = client.get("/targets/t/plan?command=upgrade&revision=heads").get_data(as_text=True)
    assert f"Row sample: up to {rows} rows per table (7 rows in 3 tables; 1 left out" in shown
    assert "fails with rows present" in shown and "2 of 2 rows changed in column note" in shown
    with app.app_context():
        from webapp.services import rehearsals

        return rehearsals.get(1).details


def upgrade_in_process(ini: Path, url: str, revision: str) -> None:
    """``alembic upgrade revision`` of the env ``ini`` on ``url``, in this process."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(ini))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, revision)


def seed_rows(ini: Path, url: str) -> None:
    """The target upgraded to r001 (in this process), with rows: 4 owners,
    4 items (of the first 3, two share a code and one belongs to owner 4,
    outside a 3-row sample) and 2 readings of every JSON-unsafe kind."""
    import datetime
    import decimal

    upgrade_in_process(ini, url, "r001")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO owners (id) VALUES (1), (2), (3), (4)"))
        conn.execute(sa.text(
            "INSERT INTO items (id, name, owner_id, note, code) VALUES "
            "(1, 'a', 1, 'n1', 'c1'), (2, 'b', 4, 'n2', 'c2'), (3, 'c', NULL, 'n3', 'c1'), "
            "(4, 'd', 2, 'n4', 'c4')"))
        readings = sa.Table("readings", sa.MetaData(), autoload_with=conn)
        conn.execute(readings.insert(), [
            {"id": 1, "taken": datetime.date(2024, 2, 29), "ratio": 0.125,
             "at": datetime.datetime(2024, 2, 29, 23, 59, 58), "amount": decimal.Decimal("12.50"),
             "blob": bytes(range(256))},
            {"id": 2, "taken": None, "at": None, "amount": None, "blob": b"", "ratio": None}])
    engine.dispose()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_the_row_sample_catches_lost_data_and_empty_table_upgrades(
        make_app, tmp_path, monkeypatch, request, dialect):
    ini = make_env(tmp_path / "env", [
        Rev("r000", None, "owners", upgrade=OWNERS, downgrade='op.drop_table("owners")'),
        Rev("r001", "r000", "items", upgrade=NAMED + "; " + READINGS,
            downgrade='op.drop_table("readings"); op.drop_table("items")'), *ROW_FAULTS])
    url = dialect_url(dialect, request, tmp_path)
    seed_rows(ini, url)
    if dialect == "sqlite":  # through the plan page's form, its rows from the targets file
        app = target_app(make_app, tmp_path, monkeypatch, ini, url, stairway={"rows": 3})
        report = stairway_from_the_plan_page(app)
    else:  # through the API, its rows in the body
        app = target_app(make_app, tmp_path, monkeypatch, ini, url)
        report = stairway(app, token_headers(app, "olga", "operator"), rows=3)
    by_revision = {r["revision"]: r for r in report["revisions"]}
    assert list(by_revision) == ["r002", "r003", "r004"], report
    assert report["passed"] is False and report["rows"] == 3
    # the sample: 3 rows of owners, of items those whose owner is sampled
    assert report["sampled_rows"] == {"owners": 3, "items": 2, "readings": 2}, report
    assert report["sample_left_out"] == {"items": 1}
    assert by_revision["r002"]["passed"], by_revision["r002"]
    assert by_revision["r003"]["differences"] == [
        "after the downgrade: table items: 2 of 2 rows changed in column note"], report
    fault = by_revision["r004"]
    assert not fault["passed"] and fault["error"].startswith(
        "the upgrade fails with rows present (it passes on empty tables): "), fault


def test_clean_revisions_pass_the_demo_with_rows(make_app, tmp_path, monkeypatch):
    # rows on: the categories the demo's 5e0a7b4d2f64 seeds are checked in
    # every later round trip
    shutil.copytree(ROOT / "examples" / "demo", tmp_path / "demo")
    app = target_app(make_app, tmp_path, monkeypatch, tmp_path / "demo" / "alembic.ini",
                     sqlite_url(tmp_path / "demo.db"))
    report = stairway(app, token_headers(app, "olga", "operator"), rows=20)
    assert len(report["revisions"]) == 15 and report["rows"] == 20
    failed = [r for r in report["revisions"] if not r["passed"]]
    assert report["passed"] and not failed, failed
    assert all(r["seconds"] is not None for r in report["revisions"])


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_clean_revisions_pass_on_the_servers(make_app, tmp_path, monkeypatch, request,
                                             dialect):
    # the fixtures' clean revisions, from r000 on with rows in t_r000 (the
    # targets file's rows = 10 applies: the body sends none)
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000"),
                                      Rev("r002", "r001")])
    url = dialect_url(dialect, request, tmp_path)
    upgrade_in_process(ini, url, "r000")
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("INSERT INTO t_r000 (id) VALUES (1), (2), (3)"))
    app = target_app(make_app, tmp_path, monkeypatch, ini, url, stairway={"rows": 10})
    report = stairway(app, token_headers(app, "olga", "operator"))
    assert report["passed"] and [r["revision"] for r in report["revisions"]] == \
        ["r001", "r002"], report
    assert report["rows"] == 10 and report["sampled_rows"] == {"t_r000": 3}, report


def test_stairway_refuses_other_commands_and_viewers(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    app = target_app(make_app, tmp_path, monkeypatch, ini, sqlite_url(tmp_path / "t.db"))
    client = app.test_client()
    operator = token_headers(app, "olga", "operator")
    down = client.post("/api/v1/targets/t/stairway", headers=operator,
                       json={"command": "downgrade", "revision": "base"})
    assert down.status_code == 400 and down.json["error"] == "bad_input"
    for rows in (-1, 10001, "x", True, 1.5, [3]):
        bad = client.post("/api/v1/targets/t/stairway", headers=operator,
                          json={"command": "upgrade", "revision": "heads", "rows": rows})
        assert bad.status_code == 400 and bad.json["detail"] == \
            "rows must be a whole number from 0 to 10000", (rows, bad.json)
    viewer = token_headers(app, "vic", "viewer")
    denied = client.post("/api/v1/targets/t/stairway", headers=viewer,
                         json={"command": "upgrade", "revision": "heads"})
    assert denied.status_code == 403


def test_sample_values_travel_as_json_and_rows_are_matched():
    import datetime
    import decimal
    import json
    import uuid

    from webapp.agent.alembic_dashboard_agent.row_sample import decode, differences, encode

    values = [None, True, 3, "é", 0.5, decimal.Decimal("12.50"), datetime.date(2024, 2, 29),
              datetime.datetime(2024, 2, 29, 23, 59, 58, 123456),
              datetime.time(7, 30), datetime.timedelta(hours=2), b"\x00\xff",
              uuid.UUID(int=7), {"a": [1, 2]}, [1, "b"]]
    for value in values:
        assert decode(json.loads(json.dumps(encode(value)))) == value, value
    assert encode(float("nan")) == {"float": "nan"}

    def table(key, rows):
        return {"t": {"key": key, "columns": ["id", "c"], "rows": [
            {"id": str(i), "c": str(c)} for i, c in rows]}}

    before = table(["id"], [(1, "x"), (2, "y"), (3, "z")])
    assert differences(before, table(["id"], [(1, "x"), (2, "q")])) == [
        "table t: 1 of 3 rows lost", "table t: 1 of 3 rows changed in column c"]
    # without a primary key, the values of each column are compared as a multiset
    assert differences(table([], [(1, "x"), (2, "x")]), table([], [(2, "x"), (1, "y")])) == [
        "table t: 1 of 2 rows changed or lost in column c"]
    assert differences(before, {}) == []  # a table gone is the schema's finding
