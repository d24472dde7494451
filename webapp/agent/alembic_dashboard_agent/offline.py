"""Offline mode (``--sql``): plans, one revision's SQL, ranges, plain commands.

Where Alembic cannot render SQLite batch operations offline, the SQL is
captured from a rehearsal on a scratch copy (:mod:`.rehearsal`).

Every op here is a read path (:func:`.readonly.reading`): env.py gets a URL the
database opens read-only, and each connection it makes must be to the
target's database and is made read-only there (a rehearsal inside swaps
that rule for its scratch copy's).
"""

from __future__ import annotations

import io

from . import alembic_private, rehearsal, unrendered
from .config import VERSION_APPLY_HOOKS, alembic_config
from .database import current_heads, sqlite_path
from .protocol import mark_phase
from .readonly import read_only_request, read_path, reading
from .steps import describe, steps_for

FLASK_SQLITE_NO_SQL = (
    "-- Offline SQL is not available for this plan: Alembic cannot render\n"
    "-- SQLite batch operations offline, and a Flask-Migrate app's own\n"
    "-- database cannot be swapped for a scratch copy to rehearse them.\n")


def _offline(config, script, fn, **kwargs) -> None:
    """Run env.py in offline mode with ``fn`` choosing the steps."""
    from alembic.runtime.environment import EnvironmentContext

    try:
        with EnvironmentContext(config, script, fn=fn, as_sql=True, **kwargs):
            script.run_env()
    except BaseException as exc:
        raise mark_phase(exc, "offline")


@read_path()
def plan(request: dict) -> dict:
    """Op ``plan`` (``command``, ``revision``): the plan from the database's
    current state — ``{"current_before", "steps", "current_after", "sql", "rehearsal",
    "unrendered", "rehearsal_error"}``.

    ``unrendered`` lists the revisions whose offline SQL could not be rendered
    because they need a live connection (:mod:`.unrendered`): ``{"revision",
    "direction", "path", "error", "captured"}`` — ``captured`` when their SQL
    comes from a rehearsal on a scratch copy (SQLite), otherwise with the
    revision's ``source`` and a note in the SQL in place of its statements.
    ``rehearsal_error`` says why such a rehearsal could not stand in (or None)."""
    from alembic.script import ScriptDirectory

    version_table = request.get("version_table") or "alembic_version"
    current = current_heads(request["url"], version_table)
    buffer = io.StringIO()
    config = alembic_config(read_only_request(request), buffer)
    script = ScriptDirectory.from_config(config)
    command_name, revision = request["command"], request["revision"]
    steps = steps_for(script, command_name, revision, current)
    heads_after: list = [list(current)]
    VERSION_APPLY_HOOKS.append(lambda step, heads: heads_after.append(sorted(heads)))
    found: list[dict] = []

    def fn(heads, context):
        return steps_for(script, command_name, revision, heads)

    def offline_fn(heads, context):  # offline only: a rehearsal runs the plain steps
        return unrendered.tolerant(fn(heads, context), found)

    rehearsed, rehearsal_error = False, None
    try:
        _offline(config, script, offline_fn, starting_rev=list(current) or None,
                 destination_rev=revision)
        sql = buffer.getvalue()
    except Exception as exc:
        if "requires a live database connection" in str(exc) and request.get("flask_app"):
            sql = FLASK_SQLITE_NO_SQL
        elif rehearsal.needs_rehearsal(exc, request):
            del heads_after[1:]  # the failed offline pass may have reported some
            sql = rehearsal.on_copy(request, sqlite_path(request["url"]), fn, revision)
            rehearsed = True
        else:
            raise
    else:
        if found:
            final_heads = heads_after[-1]
            sql, rehearsed, rehearsal_error = _rehearse_unrendered(
                request, fn, revision, found, sql)
            heads_after.append(final_heads)
    for entry in found:
        entry["captured"] = rehearsed
        if not rehearsed:
            entry["source"] = unrendered.read_source(entry["path"])
    return {"current_before": current, "steps": [describe(s) for s in steps],
            "current_after": heads_after[-1], "sql": sql, "rehearsal": rehearsed,
            "unrendered": found, "rehearsal_error": rehearsal_error}


def _rehearse_unrendered(request: dict, fn, destination, found: list[dict],
                         offline: str) -> tuple[str, bool, str | None]:
    """The plan's SQL when revisions in ``found`` inspect the database:
    captured from a rehearsal on a scratch copy of a SQLite database (not for
    a Flask-Migrate app), else ``offline`` (the offline SQL with a note per
    such revision). Returns ``(sql, rehearsed, why the rehearsal could not
    stand in or None)``; a rehearsal that fails or is refused falls back to
    ``offline``."""
    path = sqlite_path(request["url"]) if request.get("url") else None
    if path is None or request.get("flask_app"):
        return offline, False, None
    names = ", ".join(e["revision"] for e in found)
    header = (f"-- Revision(s) {names} inspect the database, so offline mode cannot render\n"
              "-- their SQL; these statements were captured from a rehearsal on a scratch copy.\n")
    try:
        return rehearsal.on_copy(request, path, fn, destination, header=header), True, None
    except Exception as exc:
        return offline, False, f"{type(exc).__name__}: {exc}"[:500]


@read_path()
def offline_sql(request: dict) -> dict:
    """Op ``offline_sql`` (``revision``, ``direction``): offline SQL of one
    revision's upgrade (from its down revisions) or downgrade —
    ``{"sql", "rehearsal"}``. With ``statements`` true, also
    ``"statements"``: each statement as the run's journal would record it
    (:func:`.journal.listing`; None when the SQL came from a rehearsal)."""
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = alembic_config(read_only_request(request), buffer)
    script = ScriptDirectory.from_config(config)
    revision = script.get_revision(request["revision"])
    if revision is None:
        raise LookupError(f"no such revision: {request['revision']}")
    if request["direction"] == "upgrade":
        step = MigrationStep.upgrade_from_script(script.revision_map, revision)
        starting = list(alembic_private.versioned_down_revisions(revision)) or None
        destination = revision.revision
        prepare = list(alembic_private.versioned_down_revisions(revision)) + list(
            alembic_private.resolved_dependencies(revision))
    else:
        step = MigrationStep.downgrade_from_script(script.revision_map, revision)
        starting = [revision.revision]
        destination = ",".join(alembic_private.versioned_down_revisions(revision)) or "base"
        prepare = [revision.revision]

    def steps(heads, context):
        return [step]

    listed, undo = None, None
    if request.get("statements"):
        from .journal import listing

        _journal, listed, undo = listing(revision.revision,
                                         request.get("version_table") or "alembic_version")
    try:
        _offline(config, script, steps, starting_rev=starting, destination_rev=destination)
    except Exception as exc:
        if not rehearsal.needs_rehearsal(exc, request):
            raise
        if undo is not None:
            undo()
            undo = None
        return {"sql": rehearsal.from_empty(request, prepare, steps, destination),
                "rehearsal": True, "statements": None}
    finally:
        if undo is not None:
            undo()
    return {"sql": buffer.getvalue(), "rehearsal": False, "statements": listed}


@read_path()
def range_sql(request: dict) -> dict:
    """Op ``range_sql`` (``start``, ``end``, ``direction``): offline SQL of
    ``upgrade START:END`` (or downgrade), like ``--sql``; for SQLite batch
    operations of an upgrade, captured from a rehearsal from an empty
    scratch database brought to START — ``{"sql", "rehearsal"}``."""
    from alembic import command as alembic_command
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = alembic_config(read_only_request(request), buffer)
    start, end = request["start"], request["end"]
    name = request.get("direction", "upgrade")
    try:
        try:
            getattr(alembic_command, name)(config, f"{start}:{end}" if start else end,
                                           sql=True)
        except BaseException as exc:
            raise mark_phase(exc, "offline")
    except Exception as exc:
        if name != "upgrade" or not rehearsal.needs_rehearsal(exc, request):
            raise
        script = ScriptDirectory.from_config(config)

        def fn(heads, context):
            return steps_for(script, "upgrade", end, heads)

        prepare = [start] if start and start != "base" else []
        return {"sql": rehearsal.from_empty(request, prepare, fn, end), "rehearsal": True}
    return {"sql": buffer.getvalue(), "rehearsal": False}


def command(request: dict) -> dict:
    """Op ``command`` (``command``, ``revision``, ``sql``): run ``alembic
    upgrade|downgrade|stamp REVISION [--sql]`` — ``{"sql"}`` (None online)."""
    from alembic import command as alembic_command

    buffer = io.StringIO()
    name = request["command"]
    if name not in ("upgrade", "downgrade", "stamp"):
        raise ValueError(f"unsupported command {name!r}")
    if not request.get("sql"):
        config = alembic_config(request, buffer)
        getattr(alembic_command, name)(config, request["revision"], sql=False)
        return {"sql": None}
    with reading(request):  # --sql: a read path like a plan
        config = alembic_config(read_only_request(request), buffer)
        getattr(alembic_command, name)(config, request["revision"], sql=True)
    return {"sql": buffer.getvalue()}
