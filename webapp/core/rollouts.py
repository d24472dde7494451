"""Fleet rollouts, the pure part: which targets a rollout selects, in which waves.

Flask-free and I/O-free: the service layer (:mod:`webapp.services.rollouts`)
stores the waves and runs them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .targets import TIERS, Target

MAX_BATCH = 1000


class SelectionError(ValueError):
    """A selection that cannot be used (message for a person); ``unknown``
    names the target names that are not configured, if that is the problem."""

    def __init__(self, message: str, unknown: Iterable[str] = ()) -> None:
        self.unknown = tuple(unknown)
        super().__init__(message)


@dataclass(frozen=True)
class Selection:
    """Which targets a rollout covers: every filter given must match.

    ``tiers``: the target's tier is one of them; ``tags``: the target has at
    least one of them (``tags = [...]`` in the targets file); ``names``: the
    target is one of them. At least one filter is required.
    """

    tiers: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        """``{"tier": [...], "tag": [...], "targets": [...]}`` (the API's keys)."""
        return {"tier": list(self.tiers), "tag": list(self.tags), "targets": list(self.names)}

    def matches(self, target: Target) -> bool:
        """True when ``target`` passes every filter given."""
        return ((not self.tiers or target.tier in self.tiers)
                and (not self.tags or bool(set(self.tags) & set(target.tags)))
                and (not self.names or target.name in self.names))


def select(targets: Iterable[Target], selection: Selection) -> list[Target]:
    """The targets ``selection`` covers, in targets-file order.

    :raises SelectionError: no filter, an unknown tier, unknown target names,
        or nothing selected.
    """
    targets = list(targets)
    if not (selection.tiers or selection.tags or selection.names):
        raise SelectionError("select targets by tier, tag or a list of target names")
    bad_tiers = [t for t in selection.tiers if t not in TIERS]
    if bad_tiers:
        raise SelectionError(f"unknown tier {bad_tiers[0]!r} (one of {', '.join(TIERS)})")
    known = {t.name for t in targets}
    unknown = [n for n in selection.names if n not in known]
    if unknown:
        raise SelectionError(f"no target called {', '.join(unknown)[:200]}", unknown)
    chosen = [t for t in targets if selection.matches(t)]
    if not chosen:
        raise SelectionError("the selection matches no target")
    return chosen


def waves(targets: Iterable[Target], batch_size: int | None = None) -> list[list[Target]]:
    """Split selected targets into waves: by tier (development, then staging,
    then production), each tier in batches of ``batch_size`` (None: the whole
    tier is one wave); targets-file order inside a tier.

    :raises SelectionError: ``batch_size`` outside 1..:data:`MAX_BATCH`.
    """
    if batch_size is not None and not 1 <= batch_size <= MAX_BATCH:
        raise SelectionError(f"batch_size must be between 1 and {MAX_BATCH}")
    result: list[list[Target]] = []
    targets = list(targets)
    for tier in TIERS:
        in_tier = [t for t in targets if t.tier == tier]
        size = batch_size or len(in_tier) or 1
        result.extend(in_tier[i:i + size] for i in range(0, len(in_tier), size))
    return result
