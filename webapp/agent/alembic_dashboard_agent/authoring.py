"""Op ``revision``: write a new revision file exactly as Alembic does."""

from __future__ import annotations

import io

from .config import alembic_config


def revision(request: dict) -> dict:
    """Op ``revision`` (``kind`` "autogenerate" | "empty" | "merge",
    ``message``, ``head``, ``branch_label``): ``alembic revision
    [--autogenerate] -m MESSAGE`` or ``alembic merge heads`` —
    ``{"revision", "path"}``, or a NoChanges failure."""
    from alembic import command as alembic_command

    config = alembic_config(request, io.StringIO())
    kind = request["kind"]
    if kind == "merge":
        result = alembic_command.merge(config, "heads", message=request["message"])
    else:
        result = alembic_command.revision(
            config, message=request["message"], autogenerate=kind == "autogenerate",
            head=request.get("head") or "head", branch_label=request.get("branch_label"))
    scripts = result if isinstance(result, list) else [result]
    scripts = [s for s in scripts if s is not None]
    if not scripts:
        return {"ok": False, "error": {"type": "NoChanges", "message":
                "Alembic produced no revision (no changes detected?)", "traceback": []}}
    return {"revision": scripts[0].revision, "path": str(scripts[0].path)}
