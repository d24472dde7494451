"""Revision history of a target's script directory, read without importing it.

:func:`build_history` reads each revision file's identifiers from its source
(:mod:`.revision_source`, through the on-disk :mod:`.parse_cache`; files
whose identifiers are not literals through a target-side loader) and
assembles the :class:`History` (:mod:`.revision_graph`, over Alembic's own
RevisionMap, so heads, bases, branch points and the pending list follow
Alembic's rules exactly).

:class:`HistoryCache` keeps each target's history in the process and
re-reads it when a file in a version location (:mod:`.script_paths`) is
added, removed or changed (name, size, mtime). Given a :class:`ParseCache`,
the result of reading each file is also kept on disk (the dashboard's
instance folder), keyed by the file's path and checked against the SHA-256
of its content, so every worker and job process reuses what one of them
parsed.

The names of those modules that other code uses are importable from here too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from . import revision_source
from .parse_cache import ParseCache, read_revision_file
from .revision_graph import History, assemble_history
from .revision_source import (
    HistoryError,
    IdentifierLoader,
    NonLiteralIdentifiers,
    RevisionInfo,
    info_from_loaded,
    parse_revision_source,
    source_has_downgrade,
)
from .script_paths import (
    _REVISION_FILE_RE,
    ScriptPaths,
    fingerprint,
    ini_of,
    script_directory_info,
    script_directory_paths,
)
from .targets import Target

__all__ = [
    "_REVISION_FILE_RE", "History", "HistoryCache", "HistoryError", "IdentifierLoader",
    "NonLiteralIdentifiers", "ParseCache", "RevisionInfo", "ScriptPaths", "build_history",
    "fingerprint", "ini_of", "parse_revision_source", "read_revision_file",
    "script_directory_info", "script_directory_paths", "source_has_downgrade",
]


def __getattr__(name: str):
    """``parsed_files`` is :data:`.revision_source.parsed_files`, read when
    asked (a counter: a copy bound here would stay 0)."""
    if name == "parsed_files":
        return revision_source.parsed_files
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_history(script_location: Path, version_locations: Sequence[Path],
                  recursive: bool = False, fp: tuple | None = None,
                  loader: IdentifierLoader | None = None,
                  parse_cache: ParseCache | None = None) -> History:
    """Parse every revision file and build the graph.

    :param fp: the :func:`fingerprint` of the files, if already taken.
    :param loader: reads the identifiers of files whose identifiers are not
        literals by running them target-side; without it such a file is an error.
    :param parse_cache: on-disk results of earlier parses (any process's),
        used for files whose content is unchanged (see :func:`read_revision_file`).
    :raises HistoryError: unreadable file, duplicate ids, missing down
        revisions, cycles — anything Alembic would refuse.
    """
    if fp is None:
        fp = fingerprint(version_locations, recursive)
    infos: dict[str, RevisionInfo] = {}
    parsed: list[RevisionInfo] = []
    computed: list[Path] = []
    downgrades: dict[Path, bool] = {}
    for path_s, _size, _mtime in fp:
        try:
            info = read_revision_file(Path(path_s), parse_cache)
        except NonLiteralIdentifiers as exc:
            if loader is None:
                raise
            computed.append(Path(path_s))
            if exc.has_downgrade is not None:
                downgrades[Path(path_s)] = exc.has_downgrade
            continue
        if info is not None:
            parsed.append(info)
    if computed:
        assert loader is not None
        try:
            loaded = loader(computed)
        except Exception as exc:  # the target's interpreter or code failed
            names = ", ".join(p.name for p in computed[:3])
            raise HistoryError(
                f"{names}: identifiers are not literals and running the file in the "
                f"target's process failed: {getattr(exc, 'error_type', type(exc).__name__)}: "
                f"{exc}", computed[0]) from None
        for path in computed:
            data = loaded.get(str(path))
            if data is None:
                continue
            parsed.append(info_from_loaded(path, data, downgrades.get(path)))
    for info in parsed:
        if info.revision in infos:
            raise HistoryError(
                f"revision {info.revision} is present more than once: "
                f"{infos[info.revision].path.name} and {info.path.name}", info.path)
        infos[info.revision] = info
    return assemble_history(script_location, tuple(version_locations), infos, fp)


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime_ns, size) of ``path``, None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class HistoryCache:
    """Per-process cache of :class:`History`, one entry per target.

    An entry is reused while the fingerprint of its version files is
    unchanged; thread-safe. ``loader_for(target)`` gives the target-side
    loader used for files whose identifiers are not literals. With
    ``parse_cache`` (a :class:`ParseCache`, or the folder for one), files are
    read through the on-disk cache shared with the other processes, so a
    history not yet in this process is rebuilt without parsing the files
    another process has parsed.
    """

    def __init__(self, loader_for: Callable[[Target], IdentifierLoader] | None = None,
                 parse_cache: ParseCache | Path | str | None = None) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, History] = {}
        self._paths: dict[str, tuple] = {}
        self._loader_for = loader_for
        if parse_cache is not None and not isinstance(parse_cache, ParseCache):
            parse_cache = ParseCache(Path(parse_cache))
        self.parse_cache = parse_cache

    def _paths_for(self, target: Target) -> ScriptPaths:
        """:func:`script_directory_info`, re-read only when the ini file changes
        (it is asked on every page view) — and, when env.py chose the
        locations (``revision_environment``), when that env.py changes: it
        is only run again then."""
        ini = ini_of(target)
        stamp = _stamp(ini) if ini is not None else None
        with self._lock:
            cached = self._paths.get(target.name)
        if cached is not None and stamp is not None and cached[0] == stamp:
            paths, env_stamp = cached[1], cached[2]
            if not paths.revision_environment \
                    or _stamp(paths.script_location / "env.py") == env_stamp:
                return paths
        paths = script_directory_info(target)
        env_stamp = _stamp(paths.script_location / "env.py") \
            if paths.revision_environment else None
        with self._lock:
            self._paths[target.name] = (stamp, paths, env_stamp)
        return paths

    def get(self, target: Target) -> History:
        """Return the target's history, re-reading files only when they changed.

        :raises HistoryError: see :func:`build_history`, :func:`script_directory_paths`.
        """
        paths = self._paths_for(target)
        version_locations = paths.version_locations
        fp = fingerprint(version_locations, paths.recursive)
        with self._lock:
            cached = self._entries.get(target.name)
        if cached is not None and cached.fingerprint == fp \
                and cached.version_locations == version_locations \
                and cached.locations_note == paths.note:
            return cached
        loader = self._loader_for(target) if self._loader_for else None
        history = build_history(paths.script_location, version_locations, paths.recursive,
                                fp, loader, self.parse_cache)
        history.revision_environment = paths.revision_environment
        history.locations_note = paths.note
        with self._lock:
            self._entries[target.name] = history
        return history
