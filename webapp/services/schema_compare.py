"""Drift you can open, and one target's schema against another's.

- :func:`drift` — what autogenerate would change so the database matches
  the models (env.py's ``target_metadata``), whether or not the database is
  at head (the agent's ``drift`` op: Alembic's ``compare_metadata`` on
  env.py's own context).
- :func:`schema_diff` — the differences between two targets' live schemas
  (staging vs production, tenant vs tenant), normalised for the usual false
  alarms (:mod:`webapp.core.schema_diff`).

Both are read paths: the agent reads with the target's read-only account
when the targets file names one, on a connection the database refuses
writes on.
"""

from __future__ import annotations

from ..core.history import HistoryError
from ..core.runner import TargetProcessError, run_agent
from ..core.schema_diff import differences
from ..core.targets import Target, TargetUrlMissing
from .catalog import Catalog


class CompareFailed(Exception):
    """A target could not be read for a comparison: ``str()`` says why
    (env.py's error, an unreachable database, a URL variable unset; never a
    password)."""


def _read(catalog: Catalog, target: Target, request: dict,
          timeout: float | None = None) -> dict:
    extra = {} if timeout is None else {"timeout": timeout}
    try:
        return run_agent(target, request, url=catalog.read_url(target), **extra).data
    except TargetProcessError as exc:
        raise CompareFailed(f"{target.name}: {exc.error_type}: {exc}") from exc
    except TargetUrlMissing as exc:
        raise CompareFailed(f"{target.name}: {exc}") from exc


def drift(catalog: Catalog, target: Target) -> dict:
    """``{"differences": [{"kind", "text", "destructive", "why"}], "current":
    [revisions], "at_head": bool}`` of ``target``: models vs database
    (autogenerate's wording, as the preview shows them). When the database
    is not at head, pending revisions are part of the differences.

    :raises CompareFailed: env.py failed, sets no ``target_metadata``, or the
        database cannot be read."""
    data = _read(catalog, target, {"op": "drift"})
    try:
        heads = set(catalog.history(target).heads)
    except HistoryError:  # the script directory's error is shown elsewhere
        heads = set()
    return {"differences": data["differences"], "current": data["current"],
            "at_head": bool(heads) and set(data["current"]) == heads}


def snapshot(catalog: Catalog, target: Target, timeout: float | None = None) -> dict:
    """The live schema snapshot of ``target`` (``alembic_dashboard_agent.schema``),
    within ``timeout`` seconds (default: the runner's).

    :raises CompareFailed: the database cannot be read (in time)."""
    return _read(catalog, target, {"op": "schema_snapshot",
                                   "version_table": target.version_table},
                 timeout)["snapshot"]


def schema_diff(catalog: Catalog, target: Target, against: Target) -> dict:
    """What differs from ``target``'s schema to ``against``'s: ``{"differences":
    [{"kind", "object", "text", "before", "after"}], "dialects": [a, b]}``
    (``before`` is ``target``'s value, ``after`` the other's); the version
    tables' difference comes last, as kind "version".

    :raises CompareFailed: either database cannot be read."""
    mine, theirs = snapshot(catalog, target), snapshot(catalog, against)
    return {"differences": differences(mine, theirs),
            "dialects": [mine["dialect"], theirs["dialect"]]}
