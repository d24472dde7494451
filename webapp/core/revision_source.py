"""One revision file's identifiers and docstring, read from its source with :mod:`ast`.

No target code runs in the dashboard process: :func:`parse_revision_source`
reads ``revision``, ``down_revision``, ``branch_labels``, ``depends_on``, the
docstring (message, ``Create Date:``) and whether the module binds
``downgrade`` into a :class:`RevisionInfo`. A file whose identifiers are not
literals raises :class:`NonLiteralIdentifiers`; its identifiers are then read
target-side (an :data:`IdentifierLoader`) and turned into a RevisionInfo by
:func:`info_from_loaded`. :class:`HistoryError` is the error of every module
that reads a script directory (this one, :mod:`.parse_cache`,
:mod:`.script_paths`, :mod:`.history`).
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def _as_tuple(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def info_from_loaded(path: Path, data: dict,
                     has_downgrade: bool | None = None) -> RevisionInfo:
    """A RevisionInfo from identifiers read by running the file target-side
    (``data`` is the file's entry in what an :data:`IdentifierLoader`
    returns: "revision", "down_revision", "branch_labels", "depends_on" as
    the module holds them, "doc" its docstring); ``has_downgrade`` is read
    from the file's source when None."""
    longdoc = (data.get("doc") or "").strip()
    date = _CREATE_DATE_RE.search(longdoc)
    return RevisionInfo(
        revision=data["revision"], down_revisions=_as_tuple(data.get("down_revision")),
        branch_labels=_as_tuple(data.get("branch_labels")),
        depends_on=_as_tuple(data.get("depends_on")),
        message=re.split("\n\n", longdoc)[0] if longdoc else "", longdoc=longdoc,
        create_date=date.group(1) if date else None, path=path,
        has_downgrade=source_has_downgrade(path) if has_downgrade is None else has_downgrade)
