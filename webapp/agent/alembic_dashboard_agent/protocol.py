"""The agent's files: one JSON request in, one JSON result out.

Request (JSON object), common fields:
  ``op``            an operation name (see :data:`alembic_dashboard_agent.OPERATIONS`)
  ``flask_app``     for Flask-Migrate targets: ``module:app`` or
                    ``module:create_app``; with ``directory`` (migrations)
  ``alembic_ini``   path of the ini; ``ini_section`` (default "alembic")
  ``url``           database URL, set as ``sqlalchemy.url`` like Alembic's
                    templates expect (not logged, not echoed back)
  ``version_table`` applied as default to ``context.configure``
Each operation documents its own fields.

Result (JSON object): ``{"ok": true, ...}`` or ``{"ok": false, "error":
{"type", "message", "traceback": [lines], "phase"}}``; ``phase`` says where
it failed: "offline", "rehearsal" or null.
"""

from __future__ import annotations

import json
import os
import traceback

PHASE_ATTR = "alembic_dashboard_phase"


def mark_phase(exc: BaseException, phase: str) -> BaseException:
    """Tag ``exc`` with the phase it happened in ("offline", "rehearsal");
    the first tag wins. Returns ``exc`` for ``raise``."""
    if getattr(exc, PHASE_ATTR, None) is None:
        try:
            setattr(exc, PHASE_ATTR, phase)
        except AttributeError:  # some C exceptions take no attributes
            pass
    return exc


def error_result(exc: BaseException) -> dict:
    """The failure result for ``exc``: type, message, last traceback lines, phase."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {"ok": False, "error": {
        "type": type(exc).__name__, "message": str(exc),
        "traceback": "".join(frames).splitlines()[-12:],
        "phase": getattr(exc, PHASE_ATTR, None)}}


def read_request(path: str) -> dict:
    """The request object in the JSON file ``path``."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_result(path: str, result: dict) -> None:
    """Write ``result`` to ``path``, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(result, f)
