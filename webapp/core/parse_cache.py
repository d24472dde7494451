"""What reading each revision file gave, kept on disk for every process.

:class:`ParseCache` holds one JSON entry per revision file (keyed by its path,
checked against the SHA-256 of its content, written atomically) under a
folder named by the code stamp of the modules that determine what an entry
holds; :func:`read_revision_file` reads a file through it, parsing with
:func:`~.revision_source.parse_revision_source` only on a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import revision_source
from .revision_source import (
    HistoryError,
    NonLiteralIdentifiers,
    RevisionInfo,
    parse_revision_source,
)

#: The modules whose code determines what a cache entry holds: the parser
#: (what a file gives) and this module (how that is written and read back).
_STAMPED_SOURCES = (Path(revision_source.__file__), Path(__file__))


def _parser_stamp() -> str:
    """Names the code that produced a cache entry: the source of the modules
    in :data:`_STAMPED_SOURCES` and the Python version (``ast`` follows the
    interpreter). Entries written by other code are never read."""
    digest = hashlib.sha256()
    for source in _STAMPED_SOURCES:
        digest.update(source.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


_ENTRY_FORMAT = 1
_TUPLE_FIELDS = ("down_revisions", "branch_labels", "depends_on")


class ParseCache:
    """What reading each revision file gave, kept on disk for every process.

    One JSON file per revision file, named by the SHA-256 of its path, under
    ``directory/<code stamp>/`` (entries written by another version of
    :mod:`.revision_source` or of this module, or by another Python, are in
    another folder, removed when this one is first used). An entry holds the
    SHA-256 of the file's content and is used only when the content read now
    has the same hash, so it can never give what an older version of the
    file said. Entries are written to a temporary file and renamed into
    place (:func:`os.replace`): several
    processes may read and write at once and each sees a whole entry or
    none. An entry that cannot be read, is not valid JSON or has the wrong
    shape counts as missing (the file is parsed and the entry rewritten);
    a cache folder that cannot be written is no error either (the file is
    simply parsed each time). Data only: entries are never executed or
    unpickled.
    """

    def __init__(self, directory: Path) -> None:
        self.root = Path(directory)
        self.directory = self.root / _parser_stamp()
        self._pruned = False

    def _entry_path(self, path: str) -> Path:
        return self.directory / (hashlib.sha256(path.encode("utf-8", "surrogateescape"))
                                 .hexdigest() + ".json")

    def load(self, path: str, digest: str) -> dict | None:
        """The entry of file ``path`` whose content hashes to ``digest``, or
        None (missing, stale, unreadable or malformed).

        :return: ``{"kind": "revision", "info": {...}}`` (RevisionInfo fields
            read from the source), ``{"kind": "none"}`` (no ``revision``:
            not a revision file) or ``{"kind": "non_literal", "message": str,
            "has_downgrade": bool}``.
        """
        try:
            with open(self._entry_path(path), "rb") as f:
                entry = json.loads(f.read())
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != _ENTRY_FORMAT \
                or entry.get("path") != path or entry.get("sha256") != digest:
            return None
        return entry if _valid_entry(entry) else None

    def store(self, path: str, digest: str, entry: dict) -> None:
        """Write the entry of file ``path`` (content hash ``digest``)
        atomically; errors are ignored (a cache that cannot be written is
        only slower)."""
        data = json.dumps({**entry, "format": _ENTRY_FORMAT, "path": path, "sha256": digest},
                          separators=(",", ":")).encode()
        temporary = None
        try:
            if not self._pruned:
                self._prepare()
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".entry-",
                                             suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, self._entry_path(path))
            temporary = None
        except OSError:
            pass
        finally:
            if temporary is not None:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass

    def _prepare(self) -> None:
        """Create the folder (0700, like the instance folder) and remove the
        folders of other code stamps (left by an older dashboard)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.mkdir(mode=0o700, exist_ok=True)
        self._pruned = True
        for other in self.root.iterdir():
            if other.name != self.directory.name and other.is_dir() \
                    and not other.is_symlink():
                shutil.rmtree(other, ignore_errors=True)


def _valid_entry(entry: dict) -> bool:
    """True when a cache entry read from disk has the shape :meth:`ParseCache.load`
    promises (anything else is treated as missing)."""
    kind = entry.get("kind")
    if kind == "none":
        return True
    if kind == "non_literal":
        return isinstance(entry.get("message"), str) \
            and isinstance(entry.get("has_downgrade"), bool)
    info = entry.get("info")
    if kind != "revision" or not isinstance(info, dict):
        return False
    return (all(isinstance(info.get(k), str) for k in ("revision", "message", "longdoc"))
            and (info.get("create_date") is None or isinstance(info["create_date"], str))
            and isinstance(info.get("has_downgrade"), bool)
            and all(isinstance(info.get(k), list) and all(isinstance(v, str) for v in info[k])
                    for k in _TUPLE_FIELDS))


def _entry_of(info: RevisionInfo | None) -> dict:
    if info is None:
        return {"kind": "none"}
    return {"kind": "revision", "info": {
        "revision": info.revision, "down_revisions": list(info.down_revisions),
        "branch_labels": list(info.branch_labels), "depends_on": list(info.depends_on),
        "message": info.message, "longdoc": info.longdoc, "create_date": info.create_date,
        "has_downgrade": info.has_downgrade}}


def _info_of(entry: dict, path: Path) -> RevisionInfo | None:
    """The parse result a (valid) cache entry stands for.

    :raises NonLiteralIdentifiers: the entry records identifiers that are not literals.
    """
    if entry["kind"] == "none":
        return None
    if entry["kind"] == "non_literal":
        raise NonLiteralIdentifiers(entry["message"], path, has_downgrade=entry["has_downgrade"])
    info = entry["info"]
    return RevisionInfo(
        revision=info["revision"], down_revisions=tuple(info["down_revisions"]),
        branch_labels=tuple(info["branch_labels"]), depends_on=tuple(info["depends_on"]),
        message=info["message"], longdoc=info["longdoc"], create_date=info["create_date"],
        path=path, has_downgrade=info["has_downgrade"])


def read_revision_file(path: Path, cache: ParseCache | None = None) -> RevisionInfo | None:
    """:func:`parse_revision_source` of the file at ``path``, through ``cache``:
    the file's bytes are read and hashed, and a cache entry for that path and
    hash is used instead of parsing; otherwise the file is parsed and the
    entry written.

    :raises HistoryError: as :func:`parse_revision_source` (also
        :class:`NonLiteralIdentifiers`, from the cache too).
    """
    if cache is None:
        return parse_revision_source(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise HistoryError(f"{path.name}: cannot read: {exc}", path) from None
    digest = hashlib.sha256(data).hexdigest()
    key = str(path)
    entry = cache.load(key, digest)
    if entry is not None:
        return _info_of(entry, path)
    try:  # newlines as read_text() gives them (universal newlines)
        source = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as exc:
        raise HistoryError(f"{path.name}: cannot read: {exc}", path) from None
    try:
        info = parse_revision_source(path, source)
    except NonLiteralIdentifiers as exc:
        cache.store(key, digest, {"kind": "non_literal", "message": str(exc),
                                  "has_downgrade": exc.has_downgrade is not False})
        raise
    cache.store(key, digest, _entry_of(info))
    return info
