"""Op ``stairway``: up, down and up again for every pending revision, with
schema snapshots compared, on a scratch copy (the rehearsal's copy and
isolation rules: :mod:`.dry_run`, :mod:`.rehearsal`).

For each revision of ``upgrade <revision>`` from where the copy starts, in
Alembic's order: snapshot (S0), upgrade it, snapshot (S1), downgrade it,
snapshot (S2), upgrade it again, snapshot (S3). It fails when

- the downgrade does not restore the schema: S2 differs from S0 (what
  differs is reported, the version table included);
- the downgrade changes nothing while the upgrade did (an empty
  ``downgrade()``): S2 equals S1;
- the second upgrade fails (the revision cannot be applied again after its
  own downgrade) or builds another schema than the first (S3 differs from S1);
- any of the three raises (the error is reported; later revisions are not
  reached).

Everything runs in one ``env.py`` run on one connection (the steps are fed
one at a time; a snapshot is read on the migration's own connection between
them, so PostgreSQL's transactional DDL sees its own changes). The schema
comparison is the agent's own (:func:`compare`), a subset of the
dashboard's: tables, columns (type, nullability, server default), primary
and foreign keys, unique and check constraints, indexes, enums, sequences and
the version table, compared exactly (one dialect).

The copy holds the schema only (SQLite's file copy has its tables emptied)
plus, when the request carries one, a row sample (:mod:`.row_sample`,
inserted before the walk). With ``rows`` the rows are checksummed at each
snapshot too: after the downgrade every row of S0's tables must have the
same values in the columns S0 and S2 share (after the second upgrade: S1's
rows in S3), else "table t: 2 of 5 rows changed in column c". A step that
raises with rows in the copy is tried again on a second, empty copy; when
it passes there, the error says "fails with rows present".
"""

from __future__ import annotations

import io
import time

from . import row_sample
from .config import alembic_config
from .schema import snapshot_connection
from .steps import steps_for

PHASES = ("upgrade", "downgrade", "second upgrade")


def compare(before: dict, after: dict) -> list[str]:
    """What differs between two snapshots of one database, as short texts
    (``"table orders: column note: default None → 'x'"``); [] when equal."""
    found = []
    if before.get("version") != after.get("version"):
        found.append(f"version table: {', '.join(before.get('version', [])) or 'base'} → "
                     f"{', '.join(after.get('version', [])) or 'base'}")
    a_tables, b_tables = before["tables"], after["tables"]
    for name in sorted(set(a_tables) - set(b_tables)):
        found.append(f"table {name}: missing")
    for name in sorted(set(b_tables) - set(a_tables)):
        found.append(f"table {name}: left behind")
    for name in sorted(set(a_tables) & set(b_tables)):
        a, b = a_tables[name], b_tables[name]
        for column in sorted(set(a["columns"]) | set(b["columns"])):
            old, new = a["columns"].get(column), b["columns"].get(column)
            if old is None:
                found.append(f"table {name}: column {column} left behind")
            elif new is None:
                found.append(f"table {name}: column {column} missing")
            else:
                for key in ("type", "nullable", "default"):
                    if old[key] != new[key]:
                        found.append(f"table {name}: column {column}: {key} "
                                     f"{old[key]} → {new[key]}")
        for key in ("primary_key", "foreign_keys", "unique", "checks", "indexes"):
            if a[key] != b[key]:
                found.append(f"table {name}: {key.replace('_', ' ')} {a[key]} → {b[key]}")
    for key, what in (("enums", "enum types"), ("sequences", "sequences")):
        if before.get(key) != after.get(key):
            found.append(f"{what}: {before.get(key)} → {after.get(key)}")
    return found


def _walk(request: dict, scratch_url: str, check) -> dict:
    """The stairway on the copy at ``scratch_url`` (inside ``check``)."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationStep
    from alembic.script import ScriptDirectory

    config = alembic_config(dict(request, url=scratch_url), io.StringIO())
    script = ScriptDirectory.from_config(config)
    version_table = request.get("version_table") or "alembic_version"
    revisions: list[dict] = []
    state: dict = {"phase": None, "current": None, "inserted": {}}
    began = time.monotonic()
    rows_on, until = bool(request.get("rows")), request.get("until")

    cache: dict = {}  # SQLite: tables reflected, by their sqlite_master text

    def snap(context) -> dict:
        return snapshot_connection(context.connection, version_table, cache)

    def rows(context, snapshot: dict) -> dict:
        return row_sample.read(context.connection, snapshot) if rows_on else {}

    def fn(heads, context):
        state["phase"] = "sample"  # SQLite: the file copy emptied, on every dialect: the sample
        state["inserted"] = row_sample.load(context.connection, request.get("sample") or [],
                                            version_table)
        state["phase"] = None
        pending = steps_for(script, "upgrade", request.get("revision") or "heads", heads)
        for step in pending:
            script_rev = step.revision
            entry = {"revision": script_rev.revision, "passed": False, "differences": [],
                     "error": None, "seconds": None}
            revisions.append(entry)
            state["current"] = entry
            started = state["started"] = time.monotonic()
            # the schema after the previous revision's second upgrade is this one's start
            s0 = state.get("last") or snap(context)
            r0 = state["last_rows"] if "last_rows" in state else rows(context, s0)
            state["phase"] = "upgrade"
            yield MigrationStep.upgrade_from_script(script.revision_map, script_rev)
            s1 = snap(context)
            r1 = rows(context, s1)
            state["phase"] = "downgrade"
            yield MigrationStep.downgrade_from_script(script.revision_map, script_rev)
            s2 = snap(context)
            # recorded now: a second upgrade that fails must not hide them
            differences = entry["differences"]
            differences += [f"after the downgrade: {d}" for d in
                            compare(s0, s2) + row_sample.differences(r0, rows(context, s2))]
            schema_moved = any(not d.startswith("version") for d in compare(s0, s1))
            if schema_moved and not [d for d in compare(s1, s2) if not d.startswith("version")]:
                differences.insert(0, "the downgrade changes nothing while the upgrade "
                                      "changes the schema (an empty downgrade())")
            state["phase"] = "second upgrade"
            yield MigrationStep.upgrade_from_script(script.revision_map, script_rev)
            s3 = state["last"] = snap(context)
            r3 = state["last_rows"] = rows(context, s3)
            state["phase"] = None
            differences += [f"after the second upgrade: {d}" for d in
                            compare(s1, s3) + row_sample.differences(r1, r3)]
            entry.update(passed=not differences, seconds=round(time.monotonic() - started, 4))
            if script_rev.revision == until:
                return

    try:
        with check, EnvironmentContext(config, script, fn=fn, destination_rev="heads"):
            script.run_env()
    except Exception as exc:
        return _stopped(exc, state, revisions, began)
    return {"passed": all(r["passed"] for r in revisions), "revisions": revisions,
            "seconds": round(time.monotonic() - began, 4), "sampled_rows": state["inserted"]}


def _stopped(exc: Exception, state: dict, revisions: list[dict], began: float) -> dict:
    """The result of a walk stopped by ``exc`` (in ``state["phase"]`` of
    ``state["current"]``); ``"failed"``: ``{"revision", "phase", "error"}``
    for :func:`stairway`'s retry on empty tables."""
    entry, where = state["current"], state["phase"]
    message = f"{type(exc).__name__}: {exc}"
    print(f"[dashboard] stairway stopped: {message}", flush=True)
    seconds = round(time.monotonic() - began, 4)
    if where == "sample":
        return {"passed": False, "revisions": revisions, "failed_phase": "sample",
                "error": f"the row sample could not be copied to the scratch copy: {message}",
                "seconds": seconds}
    if entry is None or where is None:
        return {"passed": False, "revisions": revisions, "error": message,
                "failed_phase": "env", "seconds": seconds}
    failed = {"revision": entry["revision"], "phase": where, "error": message}
    if where == "second upgrade":
        message = f"the second upgrade fails (not idempotent after its downgrade): {message}"
    else:
        message = f"the {where} fails: {message}"
    entry.update(passed=False, error=message,
                 seconds=round(time.monotonic() - state["started"], 4))
    return {"passed": False, "revisions": revisions, "error": message, "seconds": seconds,
            "sampled_rows": state["inserted"], "failed": failed}


def _passes_empty(failed: dict, again: dict) -> bool:
    """Whether the walk on empty tables (``again``, its result) got past the
    phase where the walk with rows ``failed``."""
    other = again.get("failed")
    if other is None:  # it walked to the end (findings or not), unless env.py failed
        return again.get("failed_phase") is None
    return other["revision"] == failed["revision"] and \
        PHASES.index(other["phase"]) > PHASES.index(failed["phase"])


def stairway(request: dict) -> dict:
    """Op ``stairway`` (``revision``, default "heads"; ``rehearsal_url`` as
    for ``dry_run``; ``rows``: N > 0 checks the rows, ``sample``: the rows
    to copy, :func:`.row_sample.row_sample`'s): ``{"passed", "revisions":
    [{"revision", "passed", "differences": [texts], "error", "seconds"}],
    "seconds", "error", "copy", "started_at", "sampled_rows": {table: n}}``
    on a scratch copy, dropped afterwards.

    A step that fails with rows in the copy is run again on a second copy
    with empty tables (up to that revision); when it passes there, its error
    says "fails with rows present".

    :raises RehearsalUnsafe: MySQL/MariaDB with no way to keep the run off
        the real schema (nothing was run)."""
    from .dry_run import dry_run

    result = dry_run(request, work=_walk)
    if result.get("copy", "").startswith("a copy of the SQLite file"):
        result["copy"] += ", its tables emptied"
    if request.get("rows"):
        result["copy"] = f"{result.get('copy')}, with a sample of up to {request['rows']} " \
                         "rows per table"
    failed = result.pop("failed", None)
    if failed and any(result.get("sampled_rows", {}).values()):
        try:
            again = dry_run(dict(request, sample=[], until=failed["revision"]), work=_walk)
        except Exception as exc:  # a second copy could not be made: say nothing more
            again = {"failed_phase": f"copy: {exc}"}
        if _passes_empty(failed, again):
            entry = next(r for r in result["revisions"] if r["revision"] == failed["revision"])
            entry["error"] = result["error"] = (
                f"the {failed['phase']} fails with rows present (it passes on empty "
                f"tables): {failed['error']}")
    return result
