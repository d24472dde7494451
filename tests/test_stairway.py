"""The stairway test (issue 21, item 1): for every pending revision, up,
down, up again on a scratch copy with the schema compared. A corpus of
seeded faults is caught on SQLite, MariaDB and PostgreSQL where the dialect
can express it; clean revisions (the demo's, the test fixtures') pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
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


def stairway(app, headers, target: str = "t", revision: str = "heads"):
    answer = app.test_client().post(f"/api/v1/targets/{target}/stairway", headers=headers,
                                    json={"command": "upgrade", "revision": revision})
    assert answer.status_code == 201, answer.json["detail"][-1500:]
    return answer.json


def target_app(make_app, tmp_path, monkeypatch, ini: Path, url: str):
    monkeypatch.setenv("T_URL", url)
    return make_app(write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "T_URL"}}))


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


def test_clean_revisions_pass_the_demo(make_app, tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples" / "demo", tmp_path / "demo")
    app = target_app(make_app, tmp_path, monkeypatch, tmp_path / "demo" / "alembic.ini",
                     sqlite_url(tmp_path / "demo.db"))
    report = stairway(app, token_headers(app, "olga", "operator"))
    assert len(report["revisions"]) == 15
    failed = [r for r in report["revisions"] if not r["passed"]]
    assert report["passed"] and not failed, failed
    assert all(r["seconds"] is not None for r in report["revisions"])


@pytest.mark.parametrize("dialect", ["mysql", "postgresql"])
def test_clean_revisions_pass_on_the_servers(make_app, tmp_path, monkeypatch, request,
                                             dialect):
    ini = make_env(tmp_path / "env", [Rev("r000", None), Rev("r001", "r000"),
                                      Rev("r002", "r001")])
    app = target_app(make_app, tmp_path, monkeypatch, ini, dialect_url(dialect, request,
                                                                       tmp_path))
    report = stairway(app, token_headers(app, "olga", "operator"))
    assert report["passed"] and [r["revision"] for r in report["revisions"]] == \
        ["r000", "r001", "r002"], report


def test_stairway_refuses_other_commands_and_viewers(make_app, tmp_path, monkeypatch):
    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    app = target_app(make_app, tmp_path, monkeypatch, ini, sqlite_url(tmp_path / "t.db"))
    client = app.test_client()
    operator = token_headers(app, "olga", "operator")
    down = client.post("/api/v1/targets/t/stairway", headers=operator,
                       json={"command": "downgrade", "revision": "base"})
    assert down.status_code == 400 and down.json["error"] == "bad_input"
    viewer = token_headers(app, "vic", "viewer")
    denied = client.post("/api/v1/targets/t/stairway", headers=viewer,
                         json={"command": "upgrade", "revision": "heads"})
    assert denied.status_code == 403
