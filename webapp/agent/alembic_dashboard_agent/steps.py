"""Migration steps: which ones a command runs, and how each is described."""

from __future__ import annotations

import hashlib

from . import alembic_private


def steps_for(script, command_name: str, revision: str, heads) -> list:
    """The migration steps Alembic's own command would run from ``heads``
    (the same private helpers as ``alembic.command``, via :mod:`.alembic_private`).

    :raises ValueError: ``command_name`` is not upgrade, downgrade or stamp.
    """
    heads = tuple(heads)
    if command_name == "upgrade":
        return alembic_private.upgrade_revs(script, revision, heads)
    if command_name == "downgrade":
        return alembic_private.downgrade_revs(script, revision, heads)
    if command_name == "stamp":
        return alembic_private.stamp_revs(script, revision, heads)
    raise ValueError(f"unsupported command {command_name!r}")


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def step_id(step) -> str:
    """The revision a step applies or removes ("a,b" for a stamp, "base" for none)."""
    if hasattr(step, "revision") and not getattr(step, "is_stamp", False):
        return step.revision.revision
    return ",".join(getattr(step, "to_", ()) or ()) or "base"


def describe(step) -> dict:
    """One step as JSON: revision, direction, down revisions, message, file, sha256."""
    if hasattr(step, "revision") and not getattr(step, "is_stamp", False):
        script_rev = step.revision
        return {"revision": script_rev.revision,
                "direction": "upgrade" if step.is_upgrade else "downgrade",
                "down_revisions": list(alembic_private.versioned_down_revisions(script_rev)),
                "message": script_rev.doc, "path": str(script_rev.path),
                "sha256": file_sha256(script_rev.path)}
    return {"revision": step_id(step), "direction": "stamp",
            "down_revisions": list(getattr(step, "from_", ()) or ()),
            "message": "stamp (version table only; no migration runs)", "path": None,
            "sha256": None}
