"""Revisions whose SQL offline mode cannot render: they inspect the database.

A revision that calls ``sa.inspect(op.get_bind())``, opens an ORM session on
``op.get_bind()``, or otherwise needs a live connection fails in offline mode
(``NoInspectionAvailable``, ``AttributeError: 'MockConnection' object has no
attribute 'close'``...), while the same revision runs fine online. Rather
than losing the whole plan, :func:`tolerant` wraps each step's
``upgrade()``/``downgrade()`` so that such a failure leaves, in that step's
section of the offline SQL, a note instead of the statements (any statement
the revision emitted before it failed is taken back), and is recorded.

SQLite batch operations ("requires a live database connection") are not
caught: they have their own path, a rehearsal on a scratch copy.
"""

from __future__ import annotations

import functools

NOTE = "-- this revision's SQL cannot be shown before it runs (it inspects the database)"
BATCH_MESSAGE = "requires a live database connection"


def _offline_buffer():
    """``(True, buffer)`` inside an offline (``as_sql``) migration — the buffer
    its SQL goes to (Alembic's impl), or None — and ``(False, None)`` otherwise."""
    try:
        from alembic import op

        context = op.get_context()
    except Exception:  # no context: not inside a migration
        return False, None
    if not getattr(context, "as_sql", False):
        return False, None
    return True, getattr(context.impl, "output_buffer", None)


def _position(buffer) -> int | None:
    try:
        return buffer.tell() if buffer is not None else None
    except (OSError, ValueError, AttributeError):  # not seekable (e.g. stdout)
        return None


def _take_back(buffer, start: int | None) -> None:
    """Drop what the failed revision wrote after ``start`` (when the buffer allows)."""
    if start is None:
        return
    try:
        buffer.seek(start)
        buffer.truncate()
    except (OSError, ValueError, AttributeError):
        pass


def _wrap(migration_fn, step, found: list[dict]):
    direction = "upgrade" if step.is_upgrade else "downgrade"
    script_rev = step.revision

    @functools.wraps(migration_fn)
    def run(**kw):
        offline, buffer = _offline_buffer()
        start = _position(buffer)
        try:
            return migration_fn(**kw)
        except Exception as exc:
            if not offline or BATCH_MESSAGE in str(exc):  # online, it fails as it would
                raise
            _take_back(buffer, start)
            if buffer is not None:
                buffer.write(f"{NOTE}\n-- (offline mode stopped in its {direction}(): "
                             f"{type(exc).__name__})\n\n")
            found.append({"revision": script_rev.revision, "direction": direction,
                          "path": str(script_rev.path),
                          "error": f"{type(exc).__name__}: {exc}"[:500]})
            return None

    return run


def tolerant(steps: list, found: list[dict]) -> list:
    """``steps`` with each revision step's ``migration_fn`` wrapped: an
    exception raised from inside it in offline mode (other than SQLite batch
    mode's) is recorded in ``found`` as ``{"revision", "direction", "path",
    "error"}`` and replaced by :data:`NOTE` in the output. Stamp steps are
    left as they are. Returns ``steps``."""
    for step in steps:
        if getattr(step, "is_stamp", False) or not hasattr(step, "revision"):
            continue
        step.migration_fn = _wrap(step.migration_fn, step, found)
    return steps


def read_source(path: str) -> str | None:
    """The text of a revision file (shown with its note), or None when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(200_000)
    except (OSError, UnicodeDecodeError):
        return None
