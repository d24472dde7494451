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
"""

from __future__ import annotations

import io
import time

from .config import alembic_config
from .schema import snapshot_connection
from .steps import steps_for


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
    state: dict = {"phase": None, "current": None}
    began = time.monotonic()

    cache: dict = {}  # SQLite: tables reflected, by their sqlite_master text

    def snap(context) -> dict:
        return snapshot_connection(context.connection, version_table, cache)

    def fn(heads, context):
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
            state["phase"] = "upgrade"
            yield MigrationStep.upgrade_from_script(script.revision_map, script_rev)
            s1 = snap(context)
            state["phase"] = "downgrade"
            yield MigrationStep.downgrade_from_script(script.revision_map, script_rev)
            s2 = snap(context)
            # recorded now: a second upgrade that fails must not hide them
            differences = entry["differences"]
            differences += [f"after the downgrade: {d}" for d in compare(s0, s2)]
            schema_moved = any(not d.startswith("version") for d in compare(s0, s1))
            if schema_moved and not [d for d in compare(s1, s2) if not d.startswith("version")]:
                differences.insert(0, "the downgrade changes nothing while the upgrade "
                                      "changes the schema (an empty downgrade())")
            state["phase"] = "second upgrade"
            yield MigrationStep.upgrade_from_script(script.revision_map, script_rev)
            s3 = state["last"] = snap(context)
            state["phase"] = None
            differences += [f"after the second upgrade: {d}" for d in compare(s1, s3)]
            entry.update(passed=not differences, seconds=round(time.monotonic() - started, 4))

    try:
        with check, EnvironmentContext(config, script, fn=fn, destination_rev="heads"):
            script.run_env()
    except Exception as exc:
        entry = state["current"]
        where = state["phase"]
        message = f"{type(exc).__name__}: {exc}"
        print(f"[dashboard] stairway stopped: {message}", flush=True)
        if entry is None or where is None:
            return {"passed": False, "revisions": revisions, "error": message,
                    "failed_phase": "env", "seconds": round(time.monotonic() - began, 4)}
        if where == "second upgrade":
            message = f"the second upgrade fails (not idempotent after its downgrade): {message}"
        else:
            message = f"the {where} fails: {message}"
        entry.update(passed=False, error=message,
                     seconds=round(time.monotonic() - state["started"], 4))
        return {"passed": False, "revisions": revisions, "error": message,
                "seconds": round(time.monotonic() - began, 4)}
    return {"passed": all(r["passed"] for r in revisions), "revisions": revisions,
            "seconds": round(time.monotonic() - began, 4)}


def stairway(request: dict) -> dict:
    """Op ``stairway`` (``revision``, default "heads"; ``rehearsal_url`` as
    for ``dry_run``): ``{"passed", "revisions": [{"revision", "passed",
    "differences": [texts], "error", "seconds"}], "seconds", "error",
    "copy", "started_at"}`` on a scratch copy, dropped afterwards.

    :raises RehearsalUnsafe: MySQL/MariaDB with no way to keep the run off
        the real schema (nothing was run)."""
    from .dry_run import dry_run

    return dry_run(request, work=_walk)
