"""The revision graph of one script directory: :class:`History`.

:func:`assemble_history` checks the revisions read from a script directory
(every down revision and dependency present), builds Alembic's own
:class:`~alembic.script.revision.RevisionMap` from them, marks heads, bases,
branch and merge points and orders them newest first. :class:`History` then
answers from that map what Alembic would: the pending and applied
revisions, downgrade targets and blockers, branch labels, labelled heads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from alembic.script.revision import Revision, RevisionError, RevisionMap
from alembic.util import CommandError

from ..agent.alembic_dashboard_agent import alembic_private
from .revision_source import HistoryError, RevisionInfo


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


def assemble_history(script_location: Path, version_locations: tuple[Path, ...],
                     infos: dict[str, RevisionInfo], fp: tuple) -> History:
    """The :class:`History` of the revisions ``infos`` ({revision id: info},
    as read from the files; their graph fields ``children``, ``is_head``,
    ``branches``... are set here). ``fp`` is the :func:`~.script_paths.fingerprint`
    of the files they were read from.

    :raises HistoryError: a down revision or dependency is not present, or
        Alembic's RevisionMap refuses the graph (cycles, bad labels...).
    """
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
