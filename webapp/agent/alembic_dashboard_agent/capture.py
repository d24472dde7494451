"""The SQL of a rehearsal: every statement a run on a scratch SQLite copy sends.

Alembic cannot render batch operations as offline SQL on SQLite (they reflect
the table), so :mod:`.rehearsal` runs them on a scratch copy and this module
records what they send, with Alembic's per-step markers and, before a batch
copy drops the old table, a comment naming that table's columns.
"""

from __future__ import annotations

import re

from .config import VERSION_APPLY_HOOKS


def _marker(step) -> str:
    """Alembic's offline marker for one applied step (``-- Running upgrade A -> B``)."""
    downs = ", ".join(step.down_revision_ids)
    ups = ", ".join(step.up_revision_ids)
    if step.is_upgrade:
        return f"-- Running upgrade {downs} -> {ups}"
    return f"-- Running downgrade {ups} -> {downs}"


_DROP_TABLE = re.compile(r'^DROP TABLE\s+"?([^\s";]+)"?\s*$', re.I)


def _columns_before_copy(cursor, statement: str, captured: list[str]) -> str | None:
    """Before a batch copy drops the old table, a comment naming its columns
    (so the lint can tell which columns the copy leaves out)."""
    match = _DROP_TABLE.match(statement.strip())
    if not match or not any(c.startswith(f"CREATE TABLE {rehearsal_tmp(match.group(1))}")
                            or c.startswith(f'CREATE TABLE "{rehearsal_tmp(match.group(1))}"')
                            for c in captured[-4:]):
        return None
    table = match.group(1)
    rows = cursor.connection.execute(f'PRAGMA table_info("{table}")').fetchall()
    return f"-- columns of {table} before the copy: " + ", ".join(row[1] for row in rows)


def rehearsal_tmp(table: str) -> str:
    """The name Alembic's batch mode gives the new copy of ``table``."""
    return f"_alembic_tmp_{table}"


BATCH_HEADER = ("-- Alembic cannot render batch operations as offline SQL on SQLite;\n"
                "-- these statements were captured from a rehearsal on a scratch copy.\n")


def capture(config, fn, destination, header: str = BATCH_HEADER) -> str:
    """Run ``fn``'s steps online (through env.py) and return every statement
    they sent, except reads, as an SQL script with Alembic's ``-- Running
    upgrade A -> B`` marker before each step's statements (as offline SQL has),
    after ``header`` (comment lines saying why it was captured).
    Call inside :func:`.rehearsal.scratch_only`."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    captured: list[str] = []
    markers: list[tuple[int, str]] = []  # (index in captured, marker) per applied step
    step_start = 0
    recording = False

    def record(conn, cursor, statement, parameters, context, executemany):
        head = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if recording and head not in ("SELECT", "PRAGMA"):
            text = statement.strip()
            columns = _columns_before_copy(cursor, text, captured) if head == "DROP" else None
            if columns:
                captured.append(columns)
            if parameters:
                text += f"\n-- parameters: {parameters!r}"
            captured.append(text + ";")

    def on_apply(step, heads):
        nonlocal step_start
        markers.append((step_start, _marker(step)))
        step_start = len(captured)

    script = ScriptDirectory.from_config(config)

    def steps(heads, context):
        nonlocal recording
        recording = True
        return fn(heads, context)

    event.listen(Engine, "before_cursor_execute", record)
    VERSION_APPLY_HOOKS.append(on_apply)
    try:
        with EnvironmentContext(config, script, fn=steps, destination_rev=destination):
            script.run_env()
    finally:
        VERSION_APPLY_HOOKS.remove(on_apply)
        event.remove(Engine, "before_cursor_execute", record)
    for index, marker in reversed(markers):
        captured.insert(index, marker)
    return header + "\n\n".join(captured) + "\n"
