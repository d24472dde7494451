"""The private Alembic names the dashboard uses (issue 18, item 3).

:mod:`webapp.agent.alembic_dashboard_agent.alembic_private` wraps each one
in a function; here is one test per function, on a real Alembic
environment and SQLite, checking what the dashboard relies on. An Alembic
upgrade that renames or changes one of them fails the test named after it.
The last tests keep every other module of ``webapp`` off Alembic's private
names.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
from pathlib import Path

import alembic
import pytest
import sqlalchemy as sa
from alembic.autogenerate import RevisionContext, produce_migrations
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from support.envtools import Rev, branched, linear, make_env, sqlite_url

from webapp.agent.alembic_dashboard_agent import alembic_private as ap

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_MODULE = ROOT / "webapp" / "agent" / "alembic_dashboard_agent" / "alembic_private.py"

WIDGETS = ('import sqlalchemy as sa\ntarget_metadata = sa.MetaData()\n'
           'sa.Table("widgets", target_metadata, sa.Column("id", sa.Integer, primary_key=True),'
           ' sa.Column("name", sa.String(40)))\n')


# EnvironmentContext.configure's defaults for what the renderer reads
RENDER_OPTS = {"sqlalchemy_module_prefix": "sa.", "alembic_module_prefix": "op.",
               "user_module_prefix": None, "render_item": None, "render_as_batch": False}


def _script(tmp_path, revisions, **kw) -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(str(make_env(tmp_path / "env", revisions, **kw))))


def _ids(steps) -> list[str]:
    return [step.revision.revision for step in steps]


def _widgets() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table("widgets", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(40)))
    return metadata


# --- Revision -----------------------------------------------------------------

def test_versioned_down_revisions(tmp_path):
    """Own down revisions only, never depends_on (offline_sql starts from them)."""
    script = _script(tmp_path, branched())
    assert ap.versioned_down_revisions(script.get_revision("m1")) == ("b2", "c1")
    assert ap.versioned_down_revisions(script.get_revision("c1")) == ("a2",)  # not b1
    assert ap.versioned_down_revisions(script.get_revision("a1")) == ()


def test_resolved_dependencies(tmp_path):
    """depends_on resolved to revision ids (a branch label too)."""
    revs = [*branched(), Rev("d1", "a3", "depends on a branch label and an id",
                             depends_on=("extra", "b2"))]
    script = _script(tmp_path, revs)
    assert ap.resolved_dependencies(script.get_revision("c1")) == ("b1",)
    assert ap.resolved_dependencies(script.get_revision("a2")) == ()
    assert ap.resolved_dependencies(script.get_revision("d1")) == ("x1", "b2")  # label: its rev


def test_all_down_revisions(tmp_path):
    """down_revision then depends_on, deduplicated (the history's ancestor walk)."""
    script = _script(tmp_path, branched())
    assert ap.all_down_revisions(script.get_revision("c1")) == ("a2", "b1")
    assert ap.all_down_revisions(script.get_revision("m1")) == ("b2", "c1")
    assert ap.all_down_revisions(script.get_revision("x1")) == ()


# --- ScriptDirectory ------------------------------------------------------------

def test_version_locations(tmp_path):
    """Absolute directories: ``versions`` by default, else the configured ones."""
    script = _script(tmp_path / "default", linear(1))
    found = ap.version_locations(script)
    assert [os.fspath(p) for p in found] == [str(tmp_path / "default" / "env" / "versions")]
    assert all(os.path.isabs(p) for p in found)

    locations = f"version_locations = %(here)s/versions{os.pathsep}%(here)s/more"
    script = _script(tmp_path / "two", linear(1), ini_extra=locations)
    env = tmp_path / "two" / "env"
    assert [Path(p) for p in ap.version_locations(script)] == [env / "versions", env / "more"]


def test_upgrade_revs(tmp_path):
    """Upgrade steps in run order from the given heads; a bad target is refused."""
    script = _script(tmp_path, linear(3))
    steps = ap.upgrade_revs(script, "heads", ())
    assert _ids(steps) == ["r000", "r001", "r002"]
    assert all(step.is_upgrade for step in steps)
    assert _ids(ap.upgrade_revs(script, "r002", ["r000"])) == ["r001", "r002"]
    assert ap.upgrade_revs(script, "r001", ("r001",)) == []
    with pytest.raises(CommandError):
        ap.upgrade_revs(script, "nosuch", ("r000",))


def test_downgrade_revs(tmp_path):
    """Downgrade steps in run order (newest first); a bad target is refused."""
    script = _script(tmp_path, linear(3))
    steps = ap.downgrade_revs(script, "r000", ["r002"])
    assert _ids(steps) == ["r002", "r001"]
    assert not any(step.is_upgrade for step in steps)
    assert _ids(ap.downgrade_revs(script, "base", ("r001",))) == ["r001", "r000"]
    with pytest.raises(CommandError):
        ap.downgrade_revs(script, "r002", ("r000",))  # r002 is not below r000


def test_stamp_revs(tmp_path):
    """One stamp step with ``from_``/``to_`` id tuples and no ``revision``
    (what steps.step_id and steps.describe read)."""
    script = _script(tmp_path, linear(3))
    (step,) = ap.stamp_revs(script, "r002", ["r000"])
    assert not hasattr(step, "revision")
    assert tuple(step.from_) == ("r000",) and tuple(step.to_) == ("r002",)
    (step,) = ap.stamp_revs(script, "base", ("r001",))
    assert tuple(step.from_) == ("r001",) and tuple(step.to_ or ()) == ()
    with pytest.raises(CommandError):
        ap.stamp_revs(script, "nosuch", ())


# --- MigrationContext -------------------------------------------------------------

def test_ensure_version_table(tmp_path):
    """Creates the configured version table (empty), and is harmless when it exists."""
    engine = sa.create_engine(sqlite_url(tmp_path / "v.db"))
    with engine.begin() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "my_versions"})
        ap.ensure_version_table(context)
        ap.ensure_version_table(context)
        assert "my_versions" in sa.inspect(conn).get_table_names()
        assert context.get_current_heads() == ()
    engine.dispose()


def test_version_table(tmp_path):
    """The configured version table, one ``version_num`` column; rows put in it
    are what Alembic reads as the current revisions."""
    engine = sa.create_engine(sqlite_url(tmp_path / "v.db"))
    with engine.begin() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "my_versions"})
        table = ap.version_table(context)
        assert isinstance(table, sa.Table)
        assert table.name == "my_versions" and list(table.c.keys()) == ["version_num"]
        table.create(conn)
        conn.execute(table.insert().values(version_num="r001"))
        assert context.get_current_heads() == ("r001",)
    engine.dispose()


def test_impl_exec(tmp_path):
    """Runs a statement on the context's own connection (online)."""
    engine = sa.create_engine(sqlite_url(tmp_path / "v.db"))
    with engine.begin() as conn:
        context = MigrationContext.configure(conn)
        ap.impl_exec(context, sa.text("CREATE TABLE t (x INTEGER)"))
        ap.impl_exec(context, sa.table("t", sa.column("x")).insert().values(x=7))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT x FROM t")).scalars().all() == [7]
    engine.dispose()


def test_wrap_impl_exec(tmp_path):
    """Every statement of ``op.*`` goes through the wrapper, with the impl and
    the construct; ``execute()`` runs it; undo restores Alembic's own."""
    from alembic.operations import Operations

    seen = []

    def wrapper(execute, impl, construct):
        seen.append((type(impl).__name__, str(construct.compile(dialect=impl.dialect))))
        return execute()

    engine = sa.create_engine(sqlite_url(tmp_path / "w.db"))
    undo = ap.wrap_impl_exec(wrapper)
    try:
        with engine.begin() as conn:
            op = Operations(MigrationContext.configure(conn))
            op.create_table("t", sa.Column("x", sa.Integer))
            op.add_column("t", sa.Column("y", sa.Integer))
    finally:
        undo()
    with engine.begin() as conn:  # after undo: not seen
        Operations(MigrationContext.configure(conn)).drop_column("t", "y")
    engine.dispose()
    assert [impl for impl, _ in seen] == ["SQLiteImpl", "SQLiteImpl"]
    assert "CREATE TABLE t" in seen[0][1] and "ADD COLUMN y" in seen[1][1]


# --- autogenerate ---------------------------------------------------------------------

def test_last_autogen_context(tmp_path):
    """After an autogenerate run (as autogen.autogenerate runs it): its context,
    with the database's dialect; before one, AttributeError."""
    config = Config(str(make_env(tmp_path / "env", [], env_extra=WIDGETS)))
    config.set_main_option("sqlalchemy.url", sqlite_url(tmp_path / "a.db"))
    script = ScriptDirectory.from_config(config)
    revision_context = RevisionContext(config, script, {
        "message": "preview", "autogenerate": True, "sql": False, "head": "head",
        "splice": False, "branch_label": None, "version_path": None, "rev_id": None,
        "depends_on": None})
    with pytest.raises(AttributeError):
        ap.last_autogen_context(revision_context)

    def retrieve_migrations(rev, context):
        revision_context.run_autogenerate(rev, context)
        return []

    with EnvironmentContext(config, script, fn=retrieve_migrations, as_sql=False,
                            template_args=revision_context.template_args,
                            revision_context=revision_context, dont_mutate=True):
        script.run_env()
    autogen_context = ap.last_autogen_context(revision_context)
    assert isinstance(autogen_context, AutogenContext)
    assert autogen_context.dialect.name == "sqlite"


def test_render_python_into_templatevars(tmp_path):
    """The upgrade/downgrade bodies as Python source, and the imports."""
    engine = sa.create_engine(sqlite_url(tmp_path / "a.db"))
    metadata = _widgets()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=RENDER_OPTS)
        migration_script = produce_migrations(context, metadata)
        autogen_context = AutogenContext(context, metadata)
        template_args: dict = {}
        assert ap.render_python_into_templatevars(
            autogen_context, migration_script, template_args) is template_args
    engine.dispose()
    assert "op.create_table('widgets'" in template_args["upgrades"]
    assert "sa.Column('name', sa.String(length=40)" in template_args["upgrades"]
    assert "op.drop_table('widgets')" in template_args["downgrades"]
    assert isinstance(template_args["imports"], str)


# --- nobody else touches them ----------------------------------------------------------

def _alembic_private_names() -> set[str]:
    """Every single-underscore name a class or module of Alembic defines."""
    names: set[str] = set()
    package = Path(alembic.__file__).parent
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if "testing" in parts or "templates" in parts:  # fixtures, suites, env.py: not the API
            continue
        try:
            module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__"
                                                      else parts))
        except ImportError:  # an optional dependency (e.g. a templating extra)
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") and not name.startswith("__"):
                names.add(name)
            if inspect.isclass(obj) and obj.__module__.startswith("alembic"):
                names.update(n for n in vars(obj) if n.startswith("_")
                             and not n.startswith("__"))
    return names


def _private_uses(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names and not (
                isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alembic"):
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append((node.lineno, node.module))
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names
                         if a.name.startswith("alembic") and "._" in a.name)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and node.args[1].value in names):
            found.append((node.lineno, node.args[1].value))
    return found


def test_no_other_module_uses_alembic_private_names():
    """Only alembic_private.py touches Alembic's private names: its own list
    and every underscore name Alembic defines, as an attribute, an import or a
    getattr string, anywhere in webapp/."""
    names = set(ap.WRAPPED) | _alembic_private_names()
    assert {"_upgrade_revs", "_versioned_down_revisions", "_exec"} <= names  # the harvest works
    offenders = []
    for path in sorted((ROOT / "webapp").rglob("*.py")):
        if path == PRIVATE_MODULE:
            continue
        for line, name in _private_uses(ast.parse(path.read_text(), str(path)), names):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert offenders == [], "use webapp/agent/alembic_dashboard_agent/alembic_private.py"


def test_wrapped_list_is_what_the_module_uses():
    """WRAPPED names exactly the private attributes alembic_private.py touches,
    and each wrapper says which Alembic version it was checked on."""
    tree = ast.parse(PRIVATE_MODULE.read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_")
            and not node.attr.startswith("__")}
    assert used == set(ap.WRAPPED)
    functions = [obj for name, obj in vars(ap).items()
                 if inspect.isfunction(obj) and obj.__module__ == ap.__name__]
    # one function per name, and a second for _exec: wrap_impl_exec routes it
    assert len(functions) == len(ap.WRAPPED) + 1
    for function in functions:
        assert f"Alembic {ap.CHECKED_ON}" in (function.__doc__ or ""), function.__name__
