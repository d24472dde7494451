"""Labelled branches (e.g. ``expand``/``contract``): where a database stands on each.

Branch membership is Alembic's own: a revision is on branch ``label`` when
``label`` is in its ``Revision.branch_labels`` after the RevisionMap was
built (:attr:`RevisionInfo.branches`), which is what ``alembic show`` prints.
What ``upgrade <label>@head`` would apply is asked of the same RevisionMap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alembic.script.revision import RevisionError
from alembic.util import CommandError

from .history import History, HistoryError, RevisionInfo

#: Alembic's symbolic destination "the head of branch <label>".
BRANCH_HEAD_SUFFIX = "@head"


@dataclass
class BranchStatus:
    """One labelled branch on one database.

    ``heads`` are the branch's head revision ids (usually one); ``current``
    the newest revision(s) of the branch applied on the database (empty: none
    of the branch is applied) and ``pending`` what ``upgrade <label>@head``
    would apply, in apply order (it may include revisions of other branches
    the branch ``depends_on``). Both are None when the database's state is
    unknown (unreachable, or a version table Alembic cannot place).
    """

    label: str
    heads: tuple[str, ...]
    current: tuple[str, ...] | None = None
    pending: list[RevisionInfo] | None = None

    @property
    def head(self) -> str | None:
        """The branch's head when it has exactly one, else None."""
        return self.heads[0] if len(self.heads) == 1 else None

    @property
    def destination(self) -> str:
        """The revision to give Alembic to upgrade this branch: ``<label>@head``."""
        return self.label + BRANCH_HEAD_SUFFIX

    def as_json(self) -> dict:
        """``{"label", "head", "heads", "current", "pending"}`` for the API:
        ``head`` is null when the branch has several heads; ``current`` a
        list of ids and ``pending`` a count, both null when unknown."""
        return {"label": self.label, "head": self.head, "heads": list(self.heads),
                "current": list(self.current) if self.current is not None else None,
                "pending": len(self.pending) if self.pending is not None else None}


def branch_heads(history: History, label: str) -> tuple[str, ...]:
    """The heads of the script directory that are on branch ``label`` (every
    descendant of a labelled revision carries its label, so the branch's
    heads are among the script's heads)."""
    return tuple(h for h in history.heads if label in history.by_id[h].branches)


def branch_current(history: History, label: str, applied: set[str]) -> tuple[str, ...]:
    """The newest revisions of branch ``label`` among ``applied`` (ids, see
    :meth:`History.applied`): applied members none of whose children is
    applied. Newest first; empty when nothing of the branch is applied."""
    return tuple(info.revision for info in history.revisions
                 if info.revision in applied and label in info.branches
                 and not any(child in applied for child in info.children))


def branch_pending(history: History, label: str,
                   current: Sequence[str]) -> list[RevisionInfo] | None:
    """What ``upgrade <label>@head`` would apply from ``current``, in apply
    order (Alembic's ``iterate_revisions``, as its upgrade does); None when
    Alembic cannot say (e.g. a current revision it does not know)."""
    heads = branch_heads(history, label)
    try:
        revs = list(history.revision_map.iterate_revisions(
            heads, tuple(current), implicit_base=True))
    except (RevisionError, CommandError):
        return None
    return [history.by_id[r.revision] for r in reversed(revs)]


def branch_statuses(history: History, current: Sequence[str] | None) -> list[BranchStatus]:
    """One :class:`BranchStatus` per branch label of ``history``, by label.

    :param current: the database's current revisions, or None when unknown
        (then only labels and heads are filled in).
    """
    if not history.branch_labels:
        return []
    key = ("branches", tuple(sorted(current)) if current is not None else None)
    cached = history._pending_memo.get(key)  # computed once per history and state
    if cached is not None:
        return [BranchStatus(s.label, s.heads, s.current,
                             list(s.pending) if s.pending is not None else None)
                for s in cached]
    applied = None
    if current is not None:
        try:
            applied = history.applied(current)
        except HistoryError:  # a current revision unknown to the script directory
            applied = None
    result = []
    for label in history.branch_labels:
        status = BranchStatus(label=label, heads=branch_heads(history, label))
        if applied is not None:
            status.current = branch_current(history, label, applied)
            status.pending = branch_pending(history, label, current or ())
        result.append(status)
    if len(history._pending_memo) > 32:
        history._pending_memo.clear()
    history._pending_memo[key] = tuple(result)
    return branch_statuses(history, current)


@dataclass(frozen=True)
class BranchStep:
    """One step up or down on one branch of a database at several revisions.

    ``current`` is the branch's current revision; ``anchor`` what Alembic's
    relative identifiers are written against: the branch label when
    ``current`` is on exactly one labelled branch (``reporting@+1``), else the
    revision id itself (``c27b4cbe9a0d@-1``, "one step down from here"), both
    accepted by ``alembic upgrade``/``downgrade`` on a multi-head tree.
    ``up`` / ``down`` are those identifiers, or None when there is no step
    (the branch is at its head; ``current`` has no ``downgrade()``).
    """

    name: str
    current: str
    anchor: str
    up: str | None
    down: str | None


def branch_steps(history: History, current: Sequence[str]) -> list[BranchStep]:
    """A one-step upgrade and downgrade per current revision, for a database
    at several current revisions (one per branch), where a bare ``+1``/``-1``
    is ambiguous. Order: as ``current``; empty for a single current revision
    or one the script directory does not know.
    """
    if len(current) < 2 or any(rev not in history.by_id for rev in current):
        return []
    infos = [history.by_id[rev] for rev in current]
    steps = []
    for info in infos:
        labels = info.branches
        shared = len(labels) == 1 and any(labels[0] in other.branches
                                          for other in infos if other is not info)
        anchor = labels[0] if len(labels) == 1 and not shared else info.revision
        name = anchor if anchor != info.revision else info.revision[:12]
        down = f"{anchor}@-1" if info.has_downgrade else None
        if down is not None and history.downgrade_blockers(tuple(current), down):
            down = None
        up = None if info.revision in history.heads else f"{anchor}@+1"
        steps.append(BranchStep(name=name, current=info.revision, anchor=anchor,
                                up=up, down=down))
    return steps
