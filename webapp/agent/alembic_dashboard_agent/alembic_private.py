"""Every private (underscore) Alembic name the dashboard uses, in one place.

Alembic keeps no promise about these names: an upgrade may rename them or
change what they return. Each is wrapped here by one small function, and
``tests/test_alembic_private.py`` has one test per function that runs it on
a real Alembic environment and checks what the dashboard relies on, so an
Alembic upgrade that breaks one fails exactly one named test. No other
module of ``webapp`` touches an Alembic private name (a test scans the
source for it).

Every wrapper was checked on Alembic 1.20.1. This module imports only
Alembic (lazily) and the standard library: it is part of the agent, which
runs in the target's own interpreter, and :mod:`webapp.core` imports it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: Alembic version these wrappers were checked on.
CHECKED_ON = "1.20.1"

#: The private Alembic names wrapped here (attributes, methods, functions):
#: no other module of ``webapp`` may use them.
WRAPPED = frozenset({
    "_versioned_down_revisions", "_resolved_dependencies", "_all_down_revisions",
    "_version_locations", "_upgrade_revs", "_downgrade_revs", "_stamp_revs",
    "_ensure_version_table", "_version", "_exec", "_last_autogen_context",
    "_render_python_into_templatevars",
})


# --- alembic.script.revision.Revision (and Script, its subclass) -----------

def versioned_down_revisions(revision) -> tuple[str, ...]:
    """The revision's own ``down_revision`` as a tuple of ids (``()`` for a
    base; several for a merge), without ``depends_on``.

    Wraps ``Revision._versioned_down_revisions`` (a property; Alembic 1.20.1).
    """
    return tuple(revision._versioned_down_revisions)


def resolved_dependencies(revision) -> tuple[str, ...]:
    """The revision ids its ``depends_on`` resolves to (branch labels and
    partial ids resolved by the revision map), ``()`` for none.

    Wraps ``Revision._resolved_dependencies`` (set when the revision map is
    built; Alembic 1.20.1).
    """
    return tuple(revision._resolved_dependencies)


def all_down_revisions(revision) -> tuple[str, ...]:
    """``down_revision`` followed by the resolved ``depends_on`` ids,
    deduplicated: every revision that must be applied before this one.

    Wraps ``Revision._all_down_revisions`` (a property; Alembic 1.20.1).
    """
    return tuple(revision._all_down_revisions)


# --- alembic.script.ScriptDirectory ------------------------------------------

def version_locations(script) -> list:
    """The directories Alembic reads revision files from, absolute (the
    ``version_locations`` option, package resources resolved to files, or
    ``<script_location>/versions``). Items are :class:`pathlib.Path` on
    Alembic 1.20.1 (``str`` on some older versions): callers convert.

    Wraps ``ScriptDirectory._version_locations`` (a memoized property;
    Alembic 1.20.1).
    """
    return list(script._version_locations)


def upgrade_revs(script, destination: str, heads: Sequence[str]) -> list:
    """The :class:`~alembic.runtime.migration.MigrationStep` list
    ``alembic upgrade destination`` runs from ``heads``, in run order.

    :raises alembic.util.CommandError: ``destination`` is not an upgrade
        target from ``heads`` (or cannot be resolved).

    Wraps ``ScriptDirectory._upgrade_revs(destination, current_rev)`` (what
    ``alembic.command.upgrade`` uses; Alembic 1.20.1).
    """
    return script._upgrade_revs(destination, tuple(heads))


def downgrade_revs(script, destination: str, heads: Sequence[str]) -> list:
    """The :class:`~alembic.runtime.migration.MigrationStep` list
    ``alembic downgrade destination`` runs from ``heads``, in run order.

    :raises alembic.util.CommandError: ``destination`` is not a downgrade
        target from ``heads`` (or cannot be resolved).

    Wraps ``ScriptDirectory._downgrade_revs(destination, current_rev)``
    (what ``alembic.command.downgrade`` uses; Alembic 1.20.1).
    """
    return script._downgrade_revs(destination, tuple(heads))


def stamp_revs(script, revision: str, heads: Sequence[str]) -> list:
    """The ``StampStep`` list ``alembic stamp revision`` applies from
    ``heads`` (each with ``from_`` and ``to_`` tuples of ids).

    :raises alembic.util.CommandError: the revision cannot be resolved, or
        is ambiguous (several heads).

    Wraps ``ScriptDirectory._stamp_revs(revision, heads)`` (what
    ``alembic.command.stamp`` uses; Alembic 1.20.1).
    """
    return script._stamp_revs(revision, tuple(heads))


# --- alembic.runtime.migration.MigrationContext and its DDL impl -------------

def ensure_version_table(context) -> None:
    """Create the context's version table (``opts["version_table"]``, in its
    ``version_table_schema``) if it does not exist, on the context's
    connection.

    Wraps ``MigrationContext._ensure_version_table()`` (Alembic 1.20.1).
    """
    context._ensure_version_table()


def version_table(context):
    """The context's version table as a SQLAlchemy
    :class:`~sqlalchemy.schema.Table` (one ``version_num`` column), named
    and placed as configured.

    Wraps ``MigrationContext._version`` (Alembic 1.20.1).
    """
    return context._version


def impl_exec(context, statement) -> Any:
    """Execute a SQLAlchemy statement (or SQL text) through the context's DDL
    impl, on its connection (in offline mode: written to the output).
    Returns the cursor result, None in offline mode.

    Wraps ``DefaultImpl._exec`` (``MigrationContext.impl._exec``; Alembic 1.20.1).
    """
    return context.impl._exec(statement)


def wrap_impl_exec(wrapper):
    """Route every statement Alembic's DDL impls execute through
    ``wrapper(execute, impl, construct)``, ``execute()`` running it as Alembic
    would (online and offline); returns a function that undoes it. The
    run's lock guard retries a statement that timed out on its lock here.

    Wraps ``DefaultImpl._exec`` (every impl's one execution point: ``op.*``,
    ``op.execute`` and the version table updates; Alembic 1.20.1).
    """
    import functools

    from alembic.ddl.impl import DefaultImpl

    original = DefaultImpl._exec

    @functools.wraps(original)
    def _exec(self, construct, *args, **kwargs):
        return wrapper(lambda: original(self, construct, *args, **kwargs), self, construct)

    DefaultImpl._exec = _exec

    def undo() -> None:
        DefaultImpl._exec = original

    return undo


# --- alembic.autogenerate ----------------------------------------------------

def last_autogen_context(revision_context):
    """The :class:`~alembic.autogenerate.api.AutogenContext` of the last
    autogenerate run of a :class:`~alembic.autogenerate.RevisionContext`
    (``.dialect``, ``.imports``, ``.opts``...).

    :raises AttributeError: no autogenerate has run on it.

    Wraps ``RevisionContext._last_autogen_context`` (Alembic 1.20.1).
    """
    return revision_context._last_autogen_context


def render_python_into_templatevars(autogen_context, migration_script,
                                    template_args: dict) -> dict:
    """Render a :class:`~alembic.operations.ops.MigrationScript`'s upgrade
    and downgrade operations into ``template_args`` as
    ``alembic revision --autogenerate`` would: keys ``"upgrades"``,
    ``"downgrades"`` (Python source of the bodies) and ``"imports"``.
    Returns ``template_args``.

    Wraps ``alembic.autogenerate.render._render_python_into_templatevars``
    (Alembic 1.20.1).
    """
    from alembic.autogenerate import render

    render._render_python_into_templatevars(autogen_context, migration_script, template_args)
    return template_args
