"""Plan lint on SQL that Alembic really generated: the SQLite batch copy is a
table rebuild (not a dropped table), a real DROP TABLE and a column left out
of the copy are still flagged, and each finding names its revision."""

from __future__ import annotations

import pytest
from support.envtools import Rev, make_env, sqlite_url, write_targets_file

from webapp.core.lint import lint_sql
from webapp.core.plan import compute_plan
from webapp.core.targets import load_targets

REVISIONS = [
    Rev("r000", None, upgrade='op.create_table("items", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("name", sa.String(50)), sa.Column("price", sa.Integer), '
        'sa.Column("sku", sa.String(20)))'),
    Rev("r001", "r000", "alter in batch", upgrade='with op.batch_alter_table("items", '
        'recreate="always") as b: b.alter_column("name", existing_type=sa.String(50), '
        'nullable=False)'),
    Rev("r002", "r001", "drop a column in batch", upgrade='with op.batch_alter_table("items") '
        'as b: b.drop_column("price")'),
    Rev("r003", "r002", "rename a column in batch", upgrade='with op.batch_alter_table('
        '"items", recreate="always") as b: b.alter_column("sku", new_column_name="code", '
        'existing_type=sa.String(20))'),
    Rev("r004", "r003", "really drop a table", upgrade='op.create_table("t_gone", sa.Column('
        '"id", sa.Integer, primary_key=True)); op.drop_table("t_gone")'),
]


@pytest.fixture(scope="module")
def batch_plan(tmp_path_factory):
    """The plan of ``upgrade head`` on an empty SQLite database: SQL captured
    by the agent from a rehearsal (Alembic cannot render batch mode offline)."""
    tmp = tmp_path_factory.mktemp("lint")
    ini = make_env(tmp / "env", REVISIONS)
    url = sqlite_url(tmp / "t.db")
    targets_file = write_targets_file(tmp / "targets.toml", {"t": {
        "label": "T", "tier": "staging", "alembic_ini": str(ini), "url_env": "LINT_T_URL"}})
    target = load_targets(targets_file, url_defaults={"LINT_T_URL": url})["t"]
    plan = compute_plan(target, "upgrade", "head", url=url)
    assert plan.rehearsal and "_alembic_tmp_items" in plan.sql  # a real batch copy
    return plan


def test_batch_copy_is_a_rebuild_not_a_dropped_table(batch_plan):
    findings = lint_sql(batch_plan.sql, "sqlite")
    rebuilds = [f.revision for f in findings if f.rule == "table_rebuild"]
    assert rebuilds == ["r001", "r002", "r003"]
    assert all(f.level == "info" for f in findings if f.rule == "table_rebuild")
    # the only dropped table is the real one, in the revision that drops it
    assert [(f.rule, f.revision, f.statement) for f in findings if f.rule == "drop_table"] == [
        ("drop_table", "r004", "DROP TABLE t_gone")]
    assert not [f for f in findings if f.rule == "rename" and "_alembic_tmp" in f.statement]


def test_column_left_out_of_a_batch_copy_is_a_dropped_column(batch_plan):
    findings = lint_sql(batch_plan.sql, "sqlite")
    dropped = [(f.revision, f.statement) for f in findings if f.rule == "drop_column"]
    assert dropped == [("r002", "batch copy of items leaves out price")]
    renamed = [(f.revision, f.statement) for f in findings if f.rule == "rename"]
    assert renamed == [("r003", "batch copy of items: sku -> code")]


def test_plan_findings_are_the_lint_of_its_sql(batch_plan):
    assert batch_plan.findings == [f.as_dict() for f in lint_sql(batch_plan.sql, "sqlite")]
    assert all(f["revision"] for f in batch_plan.findings)


def test_batch_copy_without_agent_comment_uses_the_create_table_seen_before():
    sql = ("-- Running upgrade  -> a1\n\nCREATE TABLE t (id INTEGER, x INTEGER);\n\n"
           "-- Running upgrade a1 -> a2\n\nCREATE TABLE _alembic_tmp_t (id INTEGER);\n\n"
           "INSERT INTO _alembic_tmp_t (id) SELECT t.id FROM t;\n\nDROP TABLE t;\n\n"
           "ALTER TABLE _alembic_tmp_t RENAME TO t;\n")
    findings = [(f.rule, f.revision) for f in lint_sql(sql, "sqlite")]
    assert findings == [("table_rebuild", "a2"), ("drop_column", "a2")]


def test_drop_without_the_rename_back_is_still_a_drop():
    sql = ("-- Running upgrade a1 -> a2\n\nCREATE TABLE _alembic_tmp_t (id INTEGER);\n\n"
           "DROP TABLE t;\n")
    assert [f.rule for f in lint_sql(sql, "sqlite")] == ["drop_table"]
