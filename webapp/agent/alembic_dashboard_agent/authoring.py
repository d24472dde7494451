"""Op ``revision``: write a new revision file exactly as Alembic does."""

from __future__ import annotations

import io

from .config import alembic_config


def docstring_safe(message: str) -> str:
    """``message`` escaped for any Python string literal Alembic's template
    puts it in (the dashboard also refuses quotes-triplets, backslashes and
    control characters): backslashes and quotes get a backslash, line
    breaks become ``\\n``. Read back from the file (``ast``), the
    docstring shows ``message`` unchanged."""
    escaped = []
    for char in message:
        if char in "\\\"'":
            escaped.append("\\" + char)
        elif ord(char) < 32 or 0x7f <= ord(char) <= 0x9f or char in "\u2028\u2029":
            escaped.append(f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")
        else:
            escaped.append(char)
    return "".join(escaped)


def revision(request: dict) -> dict:
    """Op ``revision`` (``kind`` "autogenerate" | "empty" | "merge",
    ``message``, ``head``, ``branch_label``): ``alembic revision
    [--autogenerate] -m MESSAGE`` or ``alembic merge heads`` —
    ``{"revision", "path"}``, or a NoChanges failure."""
    from alembic import command as alembic_command

    config = alembic_config(request, io.StringIO())
    kind = request["kind"]
    if kind == "merge":
        result = alembic_command.merge(config, "heads",
                                       message=docstring_safe(request["message"]))
    else:
        result = alembic_command.revision(
            config, message=docstring_safe(request["message"]), autogenerate=kind == "autogenerate",
            head=request.get("head") or "head", branch_label=request.get("branch_label"))
    scripts = result if isinstance(result, list) else [result]
    scripts = [s for s in scripts if s is not None]
    if not scripts:
        return {"ok": False, "error": {"type": "NoChanges", "message":
                "Alembic produced no revision (no changes detected?)", "traceback": []}}
    return {"revision": scripts[0].revision, "path": str(scripts[0].path)}
