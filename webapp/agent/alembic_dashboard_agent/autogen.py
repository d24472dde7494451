"""Op ``autogenerate``: compare target_metadata with the database like
``alembic revision --autogenerate``, without writing a file — nor anything
in the database: it is a read path (:func:`.readonly.reading`, a connection the
database refuses writes on) and runs with Alembic's ``dont_mutate`` (no
version table is created in an unversioned database, as ``alembic current``)."""

from __future__ import annotations

import io

from . import alembic_private
from .config import alembic_config
from .readonly import read_only_request, read_path
from .type_changes import judge_type_change

_DESTRUCTIVE = {
    "remove_table": "its rows are lost",
    "remove_column": "its values are lost",
    "remove_index": "queries relying on it slow down",
    "remove_constraint": "the rule it enforced is gone",
    "remove_fk": "the rule it enforced is gone",
}


_CONSTRAINT_KINDS = {"UniqueConstraint": "unique constraint",
                     "CheckConstraint": "check constraint", "PrimaryKeyConstraint": "primary key"}


def _columns(constraint_or_index) -> str:
    """``(a, b)``: the columns (or expressions) it covers."""
    names = [getattr(c, "name", None) or str(c) for c in
             getattr(constraint_or_index, "expressions", None) or constraint_or_index.columns]
    if not names and getattr(constraint_or_index, "sqltext", None) is not None:
        names = [str(constraint_or_index.sqltext)]  # a CHECK constraint
    return "(" + ", ".join(names) + ")"


def describe_constraint(constraint) -> str:
    """A constraint as the preview words it, after the verb: a named one as
    ``constraint <name> on <table> (<columns>)``, an unnamed one (SQLite
    reflects them so, and metadata without a naming convention declares them
    so) by its kind and columns, ``unique constraint on users (email)``; a
    foreign key adds what it refers to, ``foreign key users (org_id) -> orgs
    (id)``. ``constraint`` is an SQLAlchemy constraint of a table, as an
    autogenerate diff carries it."""
    table = constraint.table.fullname
    if type(constraint).__name__ == "ForeignKeyConstraint":
        targets = [element.target_fullname.rsplit(".", 1) for element in constraint.elements]
        where = (f"{table} ({', '.join(constraint.column_keys)}) -> {targets[0][0]} "
                 f"({', '.join(column for _, column in targets)})")
        return f"constraint {constraint.name} on {where}" if constraint.name else \
            f"foreign key {where}"
    if constraint.name:
        return f"constraint {constraint.name} on {table} {_columns(constraint)}"
    kind = _CONSTRAINT_KINDS.get(type(constraint).__name__, "constraint")
    return f"{kind} on {table} {_columns(constraint)}"


def describe_index(index) -> str:
    """``index <name> on <table> (<columns>)`` (``index on ...`` unnamed)."""
    name = f"index {index.name}" if index.name else "index"
    return f"{name} on {index.table.fullname} {_columns(index)}"


def describe_diff(diff) -> dict | list:  # noqa: C901 (one branch per Alembic diff kind)
    """One autogenerate difference as ``{"kind", "text", "destructive", "why"}``
    (a list of those for the grouped ``modify_*`` entries of one column)."""
    if isinstance(diff, list):
        return [describe_diff(d) for d in diff]
    kind = diff[0] if isinstance(diff, tuple) else "modify"
    destructive, why = kind in _DESTRUCTIVE, _DESTRUCTIVE.get(kind, "")
    if kind == "add_table":
        text = f"add table {diff[1].name}"
    elif kind == "remove_table":
        text = f"drop table {diff[1].name}"
    elif kind == "add_column":
        col = diff[3]
        text = (f"add column {diff[2]}.{col.name} {col.type} "
                f"{'NULL' if col.nullable else 'NOT NULL'}")
        if not col.nullable and col.server_default is None:
            destructive, why = True, "NOT NULL without a server default fails on a table with rows"
    elif kind == "remove_column":
        text = f"drop column {diff[2]}.{diff[3].name}"
    elif kind == "add_index":
        text = f"add {describe_index(diff[1])}"
    elif kind == "remove_index":
        text = f"drop {describe_index(diff[1])}"
        if diff[1].unique:  # MySQL reflects a unique constraint as a unique index
            why = "the uniqueness it enforced is gone"
    elif kind in ("add_constraint", "add_fk"):
        text = f"add {describe_constraint(diff[1])}"
    elif kind in ("remove_constraint", "remove_fk"):
        text = f"drop {describe_constraint(diff[1])}"
    elif kind == "modify_type":
        old, new = diff[5], diff[6]
        text = f"alter {diff[2]}.{diff[3]} type {old} → {new}"
        destructive, why = judge_type_change(old, new)
    elif kind == "modify_nullable":
        nullable = diff[6]
        text = f"alter {diff[2]}.{diff[3]} {'NULL' if nullable else 'NOT NULL'}"
        if not nullable and diff[4].get("existing_server_default") in (None, False):
            destructive, why = True, "NOT NULL added without a server default fails on NULLs"
    elif kind == "modify_default":
        text = f"alter {diff[2]}.{diff[3]} server default {diff[5]!s} → {diff[6]!s}"
    elif kind == "modify_comment":
        text = f"alter {diff[2]}.{diff[3]} comment"
    else:
        text = str(diff)
    return {"kind": kind, "text": text, "destructive": destructive, "why": why}


def ops_sql(ops_container, dialect_name: str) -> tuple[str, list[str]]:
    """Offline SQL of autogenerated operations in ``dialect_name``, one
    operation at a time: one that the dialect cannot render offline (SQLite
    cannot ALTER constraints outside a batch table rebuild) becomes an SQL
    comment instead of failing the whole preview.

    :return: (SQL text, notes on the operations that could not be rendered).
    """
    from alembic.operations import Operations
    from alembic.operations import ops as alembic_ops
    from alembic.runtime.migration import MigrationContext

    buffer = io.StringIO()
    context = MigrationContext.configure(dialect_name=dialect_name, opts={
        "as_sql": True, "output_buffer": buffer, "literal_binds": True})
    operations = Operations(context)
    notes: list[str] = []

    def invoke(op):
        if isinstance(op, alembic_ops.OpContainer):
            for sub in op.ops:
                invoke(sub)
            return
        try:
            operations.invoke(op)
        except (NotImplementedError, ValueError, TypeError) as exc:
            note = (f"{type(op).__name__} cannot be rendered as offline SQL on "
                    f"{dialect_name}: {exc}")
            if dialect_name == "sqlite":
                note += (" (SQLite needs a batch table rebuild: write the revision with "
                         "op.batch_alter_table, render_as_batch=True in env.py; the plan "
                         "shows its SQL from a rehearsal)")
            notes.append(note)
            buffer.write(f"-- {note}\n\n")

    invoke(ops_container)
    return buffer.getvalue(), notes


@read_path(must_exist=True)
def autogenerate(request: dict) -> dict:
    """Op ``autogenerate`` (``message``, ``head``): the changes, the rendered
    upgrade()/downgrade() bodies and imports, the SQL of the upgrade and
    ``sql_notes`` about operations whose SQL could not be rendered.

    :raises readonly.DatabaseMissing: a SQLite file that does not exist (it is
        not created).
    :raises readonly.ReadRefused: env.py connected to another database."""
    from alembic.autogenerate import RevisionContext
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url

    config = alembic_config(read_only_request(request), io.StringIO())
    script = ScriptDirectory.from_config(config)
    revision_context = RevisionContext(config, script, {
        "message": request.get("message") or "preview", "autogenerate": True, "sql": False,
        "head": request.get("head") or "head", "splice": False, "branch_label": None,
        "version_path": None, "rev_id": None, "depends_on": None})

    def retrieve_migrations(rev, context):
        revision_context.run_autogenerate(rev, context)
        return []

    # dont_mutate: Alembic would create the version table of an unversioned
    # database before autogenerate runs (alembic check does); only
    # `alembic current` passes it
    with EnvironmentContext(config, script, fn=retrieve_migrations, as_sql=False,
                            template_args=revision_context.template_args,
                            revision_context=revision_context, dont_mutate=True):
        script.run_env()
    # (alembic.command.revision would now write the file: we do not.)
    scripts = revision_context.generated_revisions
    if not scripts or all(s.upgrade_ops.is_empty() for s in scripts):
        return {"changes": [], "upgrade": "", "downgrade": "", "sql": "", "imports": "",
                "sql_notes": []}
    migration_script = scripts[-1]
    template_args: dict = {}
    autogen_context = alembic_private.last_autogen_context(revision_context)
    alembic_private.render_python_into_templatevars(
        autogen_context, migration_script, template_args)
    changes = []
    for diff in migration_script.upgrade_ops.as_diffs():
        described = describe_diff(diff)
        changes.extend(described if isinstance(described, list) else [described])
    dialect = make_url(request["url"]).get_backend_name() if request.get("url") else \
        autogen_context.dialect.name
    sql, notes = ops_sql(migration_script.upgrade_ops, dialect)
    return {"changes": changes, "upgrade": template_args["upgrades"],
            "downgrade": template_args["downgrades"],
            "imports": template_args.get("imports", ""), "sql": sql, "sql_notes": notes}
