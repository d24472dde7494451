"""Revision history of a target's script directory, read without importing it.

Each revision file's identifiers (``revision``, ``down_revision``,
``branch_labels``, ``depends_on``) and docstring are read from its source
with :mod:`ast` — no target code runs in the dashboard process — and fed to
Alembic's own :class:`~alembic.script.revision.RevisionMap`, so heads, bases,
branch points and the pending list follow Alembic's rules exactly.

:class:`HistoryCache` keeps each target's history in the process and
re-reads it when a file in a version location is added, removed or changed
(name, size, mtime). Given a :class:`ParseCache`, the result of reading each
file is also kept on disk (the dashboard's instance folder), keyed by the
file's path and checked against the SHA-256 of its content, so every worker
and job process reuses what one of them parsed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import Revision, RevisionError, RevisionMap
from alembic.util import CommandError

from ..agent.alembic_dashboard_agent import alembic_private
from .targets import Target

# Same rule as Alembic's ScriptDirectory: *.py files except __init__ and
# editor lock files.
_REVISION_FILE_RE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
_CREATE_DATE_RE = re.compile(r"^Create Date:\s*(.+?)\s*$", re.MULTILINE)
_IDENTIFIERS = ("revision", "down_revision", "branch_labels", "depends_on")


class HistoryError(Exception):
    """The script directory cannot be read (missing, bad file, bad graph).

    ``path`` names the offending file when there is one.
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        self.path = path
        super().__init__(message)


@dataclass
class RevisionInfo:
    """One revision as shown in history.

    ``down_revisions``/``depends_on``/``branch_labels`` are tuples of
    strings as written in the file; ``create_date`` is the text of the
    docstring's ``Create Date:`` line (None when absent).
    """

    revision: str
    down_revisions: tuple[str, ...]
    branch_labels: tuple[str, ...]
    depends_on: tuple[str, ...]
    message: str
    longdoc: str
    create_date: str | None
    path: Path
    is_head: bool = False
    is_base: bool = False
    is_branch_point: bool = False
    is_merge_point: bool = False
    children: tuple[str, ...] = ()
    #: False when the file's source binds no module-level ``downgrade``
    #: (Alembic would fail with AttributeError on downgrading through it).
    has_downgrade: bool = True
    #: The branches this revision is on, sorted: Alembic's own
    #: ``Revision.branch_labels`` after the RevisionMap is built (a label is
    #: inherited along the branch, as ``alembic show`` prints it), where
    #: ``branch_labels`` above is only what the file itself declares.
    branches: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        """The first 12 characters of the revision id."""
        return self.revision[:12]


@dataclass
class History:
    """The whole revision graph of one script directory.

    ``revisions`` are newest first (children before their parents);
    ``revision_map`` is Alembic's map built from the same data.
    """

    script_location: Path
    version_locations: tuple[Path, ...]
    revisions: list[RevisionInfo]
    by_id: dict[str, RevisionInfo]
    heads: tuple[str, ...]
    bases: tuple[str, ...]
    revision_map: RevisionMap
    fingerprint: tuple = field(repr=False, default=())
    _pending_memo: dict = field(repr=False, default_factory=dict)
    #: True when the ini sets ``revision_environment``: the version locations
    #: are those env.py chose at run time (asked in the target's process).
    revision_environment: bool = False
    #: Why env.py could not tell its locations (then the ini's stand), or None.
    locations_note: str | None = None

    def no_revisions_reason(self) -> str | None:
        """Why there is nothing to show or apply when the script directory has
        no revision at all ("no revisions found in <locations>", with how the
        locations were found); None when it has revisions."""
        if self.revisions:
            return None
        locations = ", ".join(str(p) for p in self.version_locations) or str(
            self.script_location)
        reason = f"no revisions found in {locations}"
        if self.revision_environment:
            reason += (" (the version locations env.py chose at run time: the ini sets "
                       "revision_environment = true)")
        if self.locations_note:
            reason += f"; {self.locations_note}"
        return reason + (". Check script_location and version_locations in the ini "
                         "(or what env.py sets): Alembic finds no revision there either, so "
                         "there is nothing to upgrade to")

    def get(self, revision: str) -> RevisionInfo | None:
        """Return the revision with exactly this id, or None."""
        return self.by_id.get(revision)

    @cached_property
    def branch_labels(self) -> tuple[str, ...]:
        """Every branch label declared in the script directory, sorted (a
        History is rebuilt, never changed, when its files change)."""
        return tuple(sorted({label for info in self.by_id.values()
                             for label in info.branch_labels}))

    def applied(self, current: Sequence[str]) -> set[str]:
        """Ids of the revisions applied on a database at ``current`` heads.

        That is the current revisions and all their ancestors, including
        ``depends_on`` dependencies (Alembic applies those first).

        :raises HistoryError: a current revision is not in this directory.
        """
        seen: set[str] = set()
        try:
            stack = list(self.revision_map.get_revisions(tuple(current)))
        except RevisionError as exc:
            raise HistoryError(f"current revision not found in script directory: {exc}") from None
        while stack:
            rev = stack.pop()
            if rev is None or rev.revision in seen:
                continue
            seen.add(rev.revision)
            stack.extend(self.revision_map.get_revision(r)
                         for r in alembic_private.all_down_revisions(rev))
        return seen

    def downgrade_blockers(self, current: Sequence[str], revision: str) -> list[RevisionInfo]:
        """Revisions without ``downgrade()`` that ``alembic downgrade revision``
        from ``current`` would run, in run order (empty: it can run, or Alembic
        itself refuses the destination and says why when planning).

        Same selection as Alembic's ``ScriptDirectory._downgrade_revs``.
        """
        try:
            revs = list(self.revision_map.iterate_revisions(
                tuple(current), revision, select_for_downgrade=True))
        except (RevisionError, CommandError):
            return []
        return [self.by_id[r.revision] for r in revs
                if r.revision in self.by_id and not self.by_id[r.revision].has_downgrade]

    def downgrade_targets(self, current: Sequence[str]) -> list[str]:
        """Where a downgrade from a single ``current`` revision can go without
        crossing a revision without ``downgrade()``: its ancestors down the
        first-parent line, newest first, then ``"base"`` (empty when the
        current revision itself has none). Several current heads: [].
        """
        if len(current) != 1 or current[0] not in self.by_id:
            return []
        key = ("downgrade_targets", current[0])
        if key not in self._pending_memo:  # one Alembic walk per target: memoised
            self._pending_memo[key] = tuple(self._downgrade_targets(current[0]))
        return list(self._pending_memo[key])

    def _downgrade_targets(self, current: str) -> list[str]:
        try:
            applied = self.applied((current,))
        except HistoryError:
            return []
        # Usually every applied revision has downgrade(): then nothing blocks
        # and Alembic need not be asked once per ancestor.
        check = any(not self.by_id[r].has_downgrade for r in applied if r in self.by_id)
        targets: list[str] = []
        info = self.by_id[current]
        while info.has_downgrade:
            if not info.down_revisions:
                if not check or not self.downgrade_blockers((current,), "base"):
                    targets.append("base")
                break
            down = self.by_id.get(info.down_revisions[0])
            if down is None or (check and self.downgrade_blockers((current,), down.revision)):
                break
            targets.append(down.revision)
            info = down
        return targets

    def labelled_heads(self) -> dict[str, tuple[str, ...]] | None:
        """When there are several heads and all but at most one sit on a branch
        with a branch label (Alembic gives a label to every revision of its
        branch), the heads are intended: {head: its branch labels, () for the
        unlabelled main line}. None otherwise (one head, or unlabelled heads
        that probably need a merge)."""
        if len(self.heads) < 2:
            return None
        labels = {}
        for head in self.heads:
            rev = self.revision_map.get_revision(head)
            labels[head] = tuple(sorted(rev.branch_labels)) if rev is not None else ()
        if sum(1 for found in labels.values() if not found) > 1:
            return None
        return labels

    def pending(self, current: Sequence[str]) -> list[RevisionInfo]:
        """Revisions ``upgrade heads`` would apply from ``current``, in apply order.

        :raises HistoryError: a current revision is unknown to this directory.
        """
        key = tuple(sorted(current))
        cached = self._pending_memo.get(key)
        if cached is not None:
            return list(cached)
        try:
            revs = list(self.revision_map.iterate_revisions(
                "heads", tuple(current), implicit_base=True))
        except (RevisionError, CommandError) as exc:
            raise HistoryError(str(exc)) from None
        result = [self.by_id[r.revision] for r in reversed(revs)]
        if len(self._pending_memo) > 32:
            self._pending_memo.clear()
        self._pending_memo[key] = tuple(result)
        return result


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


def _literal(node: ast.AST, path: Path, name: str):
    try:
        value = ast.literal_eval(node)
    except ValueError:
        raise _NotLiteral(name) from None
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise HistoryError(f"{path.name}: {name} must be a string, a tuple of strings or None",
                       path)


class _NotLiteral(Exception):
    pass


class NonLiteralIdentifiers(HistoryError):
    """A revision file computes its identifiers; only running it tells them.

    ``has_downgrade`` is read from the same source (see
    :attr:`RevisionInfo.has_downgrade`); None when not known.
    """

    def __init__(self, message: str, path: Path | None = None,
                 has_downgrade: bool | None = None) -> None:
        self.has_downgrade = has_downgrade
        super().__init__(message, path)


#: ``loader(paths) -> {path: {"revision", "down_revision", "branch_labels",
#: "depends_on", "doc"}}`` — runs files in the target's own process.
IdentifierLoader = Callable[[list[Path]], dict[str, dict]]


# CPython 3.11 can fail with a spurious "SystemError: AST constructor recursion
# depth mismatch" when threads parse at once (cpython gh-106905, pytest #10763);
# the dashboard reads several targets' histories in threads, and it was seen
# here. Parsing one file takes well under a millisecond: one at a time is free.
_AST_LOCK = threading.Lock()

#: How many revision files this process has parsed with :mod:`ast`
#: (:func:`parse_revision_source` calls; benchmarks and tests read it).
parsed_files = 0


def parse_revision_source(path: Path, source: str | None = None) -> RevisionInfo | None:
    """Read one revision file's identifiers and docstring without running it.

    :return: the revision, or None when the file declares no ``revision``
        (not a revision file).
    :raises HistoryError: syntax error, or identifiers that are not literals
        (``error.path`` is the file).
    """
    if source is None:
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise HistoryError(f"{path.name}: cannot read: {exc}", path) from None
    global parsed_files
    try:
        with _AST_LOCK:
            parsed_files += 1
            tree = ast.parse(source, filename=str(path))
    except SyntaxError as exc:
        raise HistoryError(
            f"{path.name}, line {exc.lineno}: syntax error: {exc.msg}", path) from None
    values: dict[str, tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _IDENTIFIERS:
            try:
                values[target.id] = _literal(value, path, target.id)
            except _NotLiteral:
                raise NonLiteralIdentifiers(
                    f"{path.name}: {target.id} is not a literal value; it can only be "
                    "read by running the file (target-side loader)", path,
                    has_downgrade=_binds_name(tree.body, "downgrade")) from None
    if "revision" not in values:
        return None
    if len(values["revision"]) != 1:
        raise HistoryError(f"{path.name}: revision must be a single string", path)
    longdoc = (ast.get_docstring(tree, clean=False) or "").strip()
    date = _CREATE_DATE_RE.search(longdoc)
    return RevisionInfo(
        has_downgrade=_binds_name(tree.body, "downgrade"),
        revision=values["revision"][0],
        down_revisions=values.get("down_revision", ()),
        branch_labels=values.get("branch_labels", ()),
        depends_on=values.get("depends_on", ()),
        message=re.split("\n\n", longdoc)[0] if longdoc else "",
        longdoc=longdoc,
        create_date=date.group(1) if date else None,
        path=path,
    )


def _binds_name(body: list[ast.stmt], name: str) -> bool:
    """True when module-level statements bind ``name``: a ``def``, an
    assignment or an import, also inside top-level ``if``/``try``/``with``
    blocks (a conditional definition still counts: only running tells)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == name:
                return True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name
                   for t in targets for n in ast.walk(t)):
                return True
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name or a.name == "*"
                   for a in node.names):
                return True
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [h.body for h in getattr(node, "handlers", [])]
            if any(_binds_name(b, name) for b in blocks):
                return True
    return False


def source_has_downgrade(path: Path) -> bool:
    """``has_downgrade`` of a file read without its identifiers (True when the
    file cannot be parsed: then only running it tells, and Alembic explains)."""
    try:
        with _AST_LOCK:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return True
    return _binds_name(tree.body, "downgrade")


def _parser_stamp() -> str:
    """Names the code that produced a cache entry: this module's source and
    the Python version (``ast`` follows the interpreter). Entries written by
    other code are never read."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


_ENTRY_FORMAT = 1
_TUPLE_FIELDS = ("down_revisions", "branch_labels", "depends_on")


class ParseCache:
    """What reading each revision file gave, kept on disk for every process.

    One JSON file per revision file, named by the SHA-256 of its path, under
    ``directory/<code stamp>/`` (entries written by another version of this
    module or another Python are in another folder, removed when this one is
    first used). An entry holds the SHA-256 of the file's content and is used
    only when the content read now has the same hash, so it can never give
    what an older version of the file said. Entries are written to a
    temporary file and renamed into place (:func:`os.replace`): several
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
            parsed.append(_info_from_loaded(path, data, downgrades.get(path)))
    for info in parsed:
        if info.revision in infos:
            raise HistoryError(
                f"revision {info.revision} is present more than once: "
                f"{infos[info.revision].path.name} and {info.path.name}", info.path)
        infos[info.revision] = info
    return _assemble(script_location, tuple(version_locations), infos, fp)


def _as_tuple(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _info_from_loaded(path: Path, data: dict,
                      has_downgrade: bool | None = None) -> RevisionInfo:
    """A RevisionInfo from identifiers read by running the file target-side
    (``has_downgrade`` read from its source when None)."""
    longdoc = (data.get("doc") or "").strip()
    date = _CREATE_DATE_RE.search(longdoc)
    return RevisionInfo(
        revision=data["revision"], down_revisions=_as_tuple(data.get("down_revision")),
        branch_labels=_as_tuple(data.get("branch_labels")),
        depends_on=_as_tuple(data.get("depends_on")),
        message=re.split("\n\n", longdoc)[0] if longdoc else "", longdoc=longdoc,
        create_date=date.group(1) if date else None, path=path,
        has_downgrade=source_has_downgrade(path) if has_downgrade is None else has_downgrade)


def _assemble(script_location: Path, version_locations: tuple[Path, ...],
              infos: dict[str, RevisionInfo], fp: tuple) -> History:
    def generate() -> list[Revision]:
        return [
            Revision(i.revision, i.down_revisions or None,
                     dependencies=i.depends_on or None,
                     branch_labels=i.branch_labels or None)
            for i in infos.values()
        ]

    # Checked here first: Alembic only warns about a missing down revision.
    children: dict[str, list[str]] = {rid: [] for rid in infos}
    labels = {label for i in infos.values() for label in i.branch_labels}
    for info in infos.values():
        for down in info.down_revisions:
            if down not in infos:
                raise HistoryError(
                    f"revision {info.revision} ({info.path.name}) has down_revision "
                    f"{down}, which is not present", info.path)
            children[down].append(info.revision)
        for dep in info.depends_on:
            if dep not in infos and dep not in labels and dep.split("@")[0] not in labels:
                raise HistoryError(
                    f"revision {info.revision} ({info.path.name}) depends on {dep}, "
                    "which is not present", info.path)
    revision_map = RevisionMap(generate)
    try:
        heads = tuple(revision_map.heads)
        bases = tuple(revision_map.bases)
        for dep in (d for i in infos.values() for d in i.depends_on):
            revision_map.get_revision(dep)
    except (RevisionError, CommandError) as exc:
        raise HistoryError(str(exc)) from None
    for rid, info in infos.items():
        info.children = tuple(sorted(children[rid]))
        info.is_head = rid in heads
        info.is_base = not info.down_revisions
        info.is_branch_point = len(children[rid]) > 1
        info.is_merge_point = len(info.down_revisions) > 1
        info.branches = tuple(sorted(revision_map.get_revision(rid).branch_labels))
    ordered = _newest_first(infos)
    return History(script_location=script_location, version_locations=version_locations,
                   revisions=ordered, by_id=infos, heads=heads, bases=bases,
                   revision_map=revision_map, fingerprint=fp)


def _newest_first(infos: dict[str, RevisionInfo]) -> list[RevisionInfo]:
    """Topological order, children first, keeping a line of descent together.

    Like ``git log --graph --topo-order``: after a revision, its first parent
    follows if all of that parent's children are already shown.
    """
    remaining_children = {rid: len(i.children) for rid, i in infos.items()}

    def sort_key(rid: str) -> tuple[str, str]:
        return (infos[rid].create_date or "", rid)

    ready = sorted((rid for rid, n in remaining_children.items() if n == 0), key=sort_key)
    ordered: list[RevisionInfo] = []
    preferred: str | None = None
    while ready:
        if preferred is not None and preferred in ready:
            rid = preferred
            ready.remove(rid)
        else:
            rid = ready.pop()  # newest by create date
        info = infos[rid]
        ordered.append(info)
        preferred = None
        for i, down in enumerate(info.down_revisions):
            if down not in remaining_children:
                continue
            remaining_children[down] -= 1
            if remaining_children[down] == 0:
                ready.append(down)
                if i == 0:
                    preferred = down
        ready.sort(key=sort_key)
    return ordered


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
