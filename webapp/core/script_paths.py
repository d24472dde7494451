"""Where a target's revisions are: its script directory and version locations.

:func:`script_directory_info` reads them from the target's ini the way
Alembic's :meth:`ScriptDirectory.from_config` does (without touching this
process's ``sys.path``), or asks the target's own Python (the agent's
``script_directory`` op) when the ini sets ``revision_environment`` or names a
``package:path`` location. :func:`fingerprint` lists the revision files found
there, with their size and mtime, cheaply enough for every page view.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from ..agent.alembic_dashboard_agent import alembic_private
from .revision_source import HistoryError
from .targets import Target

# Same rule as Alembic's ScriptDirectory: *.py files except __init__ and
# editor lock files.
_REVISION_FILE_RE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")


@dataclass(frozen=True)
class ScriptPaths:
    """Where a target's revisions are: ``script_location``, the absolute
    ``version_locations`` and ``recursive`` (recursive_version_locations).
    ``revision_environment`` is True when they were found by running env.py
    in the target's process (the ini sets ``revision_environment``);
    ``note`` then says why env.py could not tell (the ini's locations stand)."""

    script_location: Path
    version_locations: tuple[Path, ...]
    recursive: bool
    revision_environment: bool = False
    note: str | None = None


def script_directory_paths(target: Target) -> tuple[Path, tuple[Path, ...], bool]:
    """Read the script location and version locations from the target's ini.

    Mirrors :meth:`ScriptDirectory.from_config` without its side effect on
    ``sys.path`` (``prepend_sys_path``), which must not touch our process.
    See :func:`script_directory_info` (this is its first three fields).

    :return: (script_location, version_locations, recursive_version_locations)
    :raises HistoryError: missing ini, missing ``script_location``, or
        env.py/the package cannot be run in the target's process.
    """
    info = script_directory_info(target)
    return info.script_location, info.version_locations, info.recursive


def ini_of(target: Target) -> Path | None:
    """The ini Alembic reads for ``target``: its ``alembic_ini``, or the
    ``alembic.ini`` of a Flask-Migrate app's migrations directory (the one
    Flask-Migrate reads); None when there is none."""
    if target.alembic_ini is not None:
        return target.alembic_ini
    if target.directory is not None and (target.directory / "alembic.ini").is_file():
        return target.directory / "alembic.ini"
    return None


def _revision_environment(target: Target) -> bool:
    """True when the target's ini sets ``revision_environment`` (env.py then
    runs for ``alembic history`` and may choose the version locations)."""
    ini = ini_of(target)
    if ini is None:
        return False
    try:
        section = target.ini_section if target.alembic_ini is not None else "alembic"
        return bool(Config(str(ini), ini_section=section).get_alembic_boolean_option(
            "revision_environment"))
    except Exception as exc:  # configparser errors come in many classes
        raise HistoryError(f"cannot read {ini}: {exc}") from None


def script_directory_info(target: Target) -> ScriptPaths:
    """Where ``target``'s revisions are (see :class:`ScriptPaths`).

    From the ini alone, as :meth:`ScriptDirectory.from_config` reads it,
    unless the ini sets ``revision_environment = true`` or names a
    ``package:path`` location: then in the target's own Python (the agent's
    ``script_directory`` op), which for ``revision_environment`` runs env.py
    the way ``alembic history`` does (offline, no migration) and answers
    with the locations env.py chose at run time.

    :raises HistoryError: missing ini, missing ``script_location``, script
        directory not found, or the target's process failed.
    """
    if _revision_environment(target):
        return _paths_from_target_process(target, url=_read_url(target))
    if target.alembic_ini is not None:
        try:
            config = Config(str(target.alembic_ini), ini_section=target.ini_section)
            script_location = config.get_alembic_option("script_location")
            if target.flask_app and not script_location and target.directory:
                script_location = str(target.directory)
            version_locations = config.get_version_locations_list()
            recursive = config.get_alembic_boolean_option("recursive_version_locations")
        except Exception as exc:  # configparser errors come in many classes
            raise HistoryError(f"cannot read {target.alembic_ini}: {exc}") from None
        if not script_location:
            raise HistoryError(
                f"no 'script_location' key in section [{target.ini_section}] "
                f"of {target.alembic_ini}")
    else:
        assert target.directory is not None
        script_location, version_locations, recursive = str(target.directory), None, False
    if any(_is_package_resource(p) for p in [script_location, *(version_locations or ())]):
        return _paths_from_target_process(target)
    location = Path(script_location)
    if not location.is_absolute():
        location = (target.working_directory / location).resolve()
    if not location.is_dir():
        raise HistoryError(f"script directory not found: {location}")
    script = ScriptDirectory(str(location), version_locations=version_locations,
                             recursive_version_locations=recursive)
    return ScriptPaths(location, tuple(Path(p) for p in alembic_private.version_locations(script)),
                       bool(recursive))


def _read_url(target: Target) -> str | None:
    """The URL env.py is given when it runs to tell its locations: the read
    one (offline mode never connects; a connection env.py opens anyway is
    read-only), None when the targets file gives none (a Flask-Migrate app's
    env.py asks its app)."""
    from ..agent.alembic_dashboard_agent.readonly import read_only_url
    from .targets import TargetUrlMissing

    try:
        url = target.readonly_database_url() or target.database_url()
    except TargetUrlMissing:
        return None
    return read_only_url(url)


def _is_package_resource(location: str) -> bool:
    """``package:path`` (Alembic's package-resource form), not a file path."""
    return not os.path.isabs(location) and ":" in location


def _paths_from_target_process(target: Target, url: str | None = None) -> ScriptPaths:
    """Resolve the locations the way Alembic does, in the target's own Python
    (where the package is importable, and where env.py can run): the agent's
    ``script_directory`` operation.

    :param url: the database URL env.py gets (``revision_environment``).
    :raises HistoryError: the package cannot be imported or has no such
        folder, or the target's process failed.
    """
    from .runner import TargetProcessError, run_agent

    try:
        data = run_agent(target, {"op": "script_directory"}, url=url).data
    except TargetProcessError as exc:
        raise HistoryError(f"cannot resolve the script location of {target.name} in its "
                           f"own Python: {exc.error_type}: {exc}") from None
    location = Path(data["script_location"])
    if not location.is_dir():
        raise HistoryError(f"script directory not found: {location}")
    return ScriptPaths(location, tuple(Path(p) for p in data["version_locations"]),
                       bool(data["recursive"]), bool(data.get("revision_environment")),
                       data.get("note"))


def fingerprint(locations: Iterable[Path], recursive: bool) -> tuple:
    """Cheap signature of the version files: (path, size, mtime_ns) of each.

    Changes whenever a revision file is added, removed or written. Runs on
    every page view, so it costs one ``stat`` per file and no path
    resolution; a file reachable twice (symlinks, overlapping locations) is
    counted once by inode, as Alembic skips files it has already loaded.
    """
    items = []
    seen: set[tuple[int, int]] = set()
    for location in locations:
        folders = [str(location)]
        while folders:
            folder = folders.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            subfolders = []
            for entry in entries:
                if entry.is_dir():
                    if recursive and entry.name != "__pycache__":
                        subfolders.append(entry.path)
                    continue
                if not _REVISION_FILE_RE.match(entry.name):
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                items.append((entry.path, st.st_size, st.st_mtime_ns))
            folders.extend(reversed(subfolders))
    return tuple(items)
