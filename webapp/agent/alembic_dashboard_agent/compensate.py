"""Compensation: undo the statements of a half-applied revision that took
effect, inside a job's ``run`` (op ``run`` with ``command: "compensate"``).

The dashboard sends the statements (the generated inverse of what its
statement journal says took effect, newest first, already shown in the job's
plan and pinned by its hash) as ``compensate: {"revision", "statements"}``.
They run on the migration's own connection, from the target's ``env.py``,
under the target's lock and lock guard like any migration; no revision's
``upgrade()`` or ``downgrade()`` runs and the version table is not touched
(it still names the revision before the half-applied one).
"""

from __future__ import annotations


def no_steps(script, command: str, revision: str, heads) -> list:
    """The steps of a compensation: none (the signature of :func:`.steps.steps_for`)."""
    return []


def compensate(context, order: dict | None) -> None:
    """Run ``order["statements"]`` (SQL strings, in order) on the migration
    context's connection through its impl (so the lock guard sees each one);
    each is named in the log first. Nothing when ``order`` is None.

    :raises Exception: the database's error for a statement; those before it
        took effect (the log names them).
    """
    if not order:
        return
    statements = order["statements"]
    for number, sql in enumerate(statements, start=1):
        print(f"[dashboard] compensate {order['revision']}: statement {number} of "
              f"{len(statements)}: {sql}", flush=True)
        context.impl.execute(sql)
    print(f"[dashboard] compensate {order['revision']}: {len(statements)} statement(s) "
          "undone; the version table is unchanged", flush=True)
