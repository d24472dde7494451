"""``revision_environment = true``: env.py decides where the revisions are.

With this ini option Alembic runs env.py for ``alembic history`` (and for
``revision`` and ``merge``): an :class:`~alembic.runtime.environment.EnvironmentContext`
around ``ScriptDirectory.run_env()`` whose migration function returns no
step. An env.py may then choose the version locations at run time — through
the Config (``config.set_main_option("version_locations", ...)``) or by
altering the script directory it is given (``context.script.version_locations
= [...]``) — so the ini alone does not say where the revisions are.

The agent runs env.py that way once per process, in offline mode (nothing
connects, nothing is written; the SQL it would print is thrown away; a
connection env.py opens anyway must be to the target's database and is made
read-only there), and then gives every Alembic Config it builds the script
location and version locations env.py chose (:func:`honour`). History,
plans, offline SQL and the online run therefore all see the revisions the
project's own CLI sees.
"""

from __future__ import annotations

import io
import os

from . import alembic_private

# (alembic_ini, ini_section, flask_app, directory) -> what env.py chose (see resolve)
_CHOSEN: dict[tuple, dict] = {}


def enabled(config) -> bool:
    """True when the Config sets ``revision_environment`` (ini or pyproject)."""
    from alembic.util import asbool

    getter = getattr(config, "get_alembic_option", None) or config.get_main_option
    return bool(asbool(getter("revision_environment")))


def _options(config) -> tuple:
    """What of the Config decides the script directory's locations."""
    getter = getattr(config, "get_alembic_option", None) or config.get_main_option
    return (getter("script_location"), config.get_version_locations_list(),
            getter("recursive_version_locations"))


def _locations(script) -> dict:
    """Absolute script location and version locations of ``script`` as its
    attributes are now (a fresh ScriptDirectory: the memoised list of the old
    one may predate env.py's change)."""
    from alembic.script import ScriptDirectory

    fresh = ScriptDirectory(script.dir, version_locations=script.version_locations or None,
                            recursive_version_locations=script.recursive_version_locations)
    locations = alembic_private.version_locations(fresh)
    return {"script_location": os.path.abspath(fresh.dir),
            "version_locations": [os.path.abspath(p) for p in locations],
            "recursive": bool(fresh.recursive_version_locations)}


def resolve(config, url: str | None) -> dict:
    """Run env.py like ``alembic history`` does with ``revision_environment``
    (offline: see the module docstring) and return where the revisions are:
    ``{"script_location", "version_locations": [paths], "recursive",
    "chosen_by": "script"|"config"|"ini", "note": str|None}``.

    A change env.py made to the script directory it was given wins (that is
    what Alembic's own commands use), then a change to the Config; with
    neither, the ini's locations stand. env.py failing (e.g. offline mode
    without a URL) is not an error: ``note`` says so, and what it had set
    before failing still counts.
    """
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from .guards import connections_follow
    from .readonly import rule_for

    before_options = _options(config)
    script = ScriptDirectory.from_config(config)
    before = (script.dir, list(script.version_locations), script.recursive_version_locations)
    saved_buffer, config.output_buffer = config.output_buffer, io.StringIO()
    note = None
    try:
        with connections_follow(rule_for(url, read_only=True)):
            with EnvironmentContext(config, script, fn=lambda rev, context: [], as_sql=True):
                script.run_env()
    except Exception as exc:  # env.py is the target's code: any failure
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        note = (f"env.py could not be run to the end to find the version locations "
                f"(revision_environment = true): {type(exc).__name__}: {first}")
        print(f"[dashboard] {note}", flush=True)
    finally:
        config.output_buffer = saved_buffer
    after = (script.dir, list(script.version_locations), script.recursive_version_locations)
    if after != before:
        chosen, by = _locations(script), "script"
    elif _options(config) != before_options:
        chosen, by = _locations(ScriptDirectory.from_config(config)), "config"
    else:
        chosen, by = _locations(script), "ini"
    return {**chosen, "chosen_by": by, "note": note}


def _key(request: dict) -> tuple:
    return (request.get("alembic_ini"), request.get("ini_section"), request.get("flask_app"),
            request.get("directory"))


def chosen_for(request: dict) -> dict | None:
    """What :func:`honour` learnt for ``request``'s target in this process, or None."""
    return _CHOSEN.get(_key(request))


def honour(config, request: dict):
    """When ``config`` sets ``revision_environment``, give it the locations
    env.py chooses (found once per process by :func:`resolve`): its
    ``script_location``, ``recursive_version_locations`` and what
    ``get_version_locations_list()`` answers, so that every
    ``ScriptDirectory.from_config(config)`` — Alembic's commands' too — loads
    the revisions from there. Returns ``config``; without the option it is
    left as it is."""
    if not enabled(config):
        return config
    key = _key(request)
    chosen = _CHOSEN.get(key)
    if chosen is None:
        chosen = _CHOSEN[key] = resolve(config, request.get("url"))
    from alembic.script import ScriptDirectory

    current = ScriptDirectory.from_config(config)
    if os.path.abspath(current.dir) != chosen["script_location"]:
        config.set_main_option("script_location", chosen["script_location"].replace("%", "%%"))
    if bool(current.recursive_version_locations) != chosen["recursive"]:
        config.set_main_option("recursive_version_locations",
                               "true" if chosen["recursive"] else "false")
    locations = list(chosen["version_locations"])
    # an instance attribute: no separator to guess, and env.py setting the
    # option again on this Config (it runs again for the command) changes nothing
    config.get_version_locations_list = lambda: list(locations)
    return config
