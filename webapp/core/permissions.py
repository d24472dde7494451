"""Roles and per-target grants: who may do what on which target.

A user has a *global* role (``users.role``: none < viewer < operator <
approver < admin). The targets file may grant more on one target
(``[targets.NAME.policy]``) or on every target of a tier
(``[tiers.TIER.policy]``), with lists ``viewers``, ``operators``,
``approvers``, ``admins`` of entries ``group:<name>`` or ``user:<name>``.
The effective role on a target is the highest of the global role and the
grants that match the user's name or groups; :class:`Access` also says
which grants gave it, for the audit log.

Flask-free: used by the services, the CLI and the targets file parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

GRANT_LISTS = ("viewers", "operators", "approvers", "admins")
GRANT_RE = re.compile(r"^(group|user):[^\s,]{1,128}$")


class Role(IntEnum):
    """A role, ordered by power; ``NONE`` sees nothing it was not granted."""

    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        """The role's name as stored and shown: ``none``, ``viewer``, ..."""
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Role:
        """``"approver"`` → :attr:`APPROVER`.

        :raises ValueError: not a role name.
        """
        try:
            return cls[(name or "").strip().upper()]
        except KeyError:
            raise ValueError(f"not a role: {name!r} (one of "
                             f"{', '.join(r.label for r in cls)})") from None


# list name in the targets file → the role it grants
LIST_ROLES = {"viewers": Role.VIEWER, "operators": Role.OPERATOR,
              "approvers": Role.APPROVER, "admins": Role.ADMIN}


@dataclass(frozen=True)
class Grants:
    """The four grant lists of one policy table (entries ``group:x`` / ``user:x``)."""

    viewers: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    approvers: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()

    def matching(self, username: str, groups: Iterable[str]) -> list[tuple[Role, str]]:
        """``(role, entry)`` for every entry naming ``username`` or one of ``groups``."""
        names = {f"user:{username}"} | {f"group:{g}" for g in groups}
        return [(role, entry) for list_name, role in LIST_ROLES.items()
                for entry in getattr(self, list_name) if entry in names]

    @property
    def is_empty(self) -> bool:
        """True when no list has an entry."""
        return not any(getattr(self, name) for name in GRANT_LISTS)


def parse_grants(raw: Mapping[str, object]) -> tuple[Grants, str | None, str | None]:
    """The grant lists of a policy table.

    :param raw: the table as read by tomllib; keys other than
        :data:`GRANT_LISTS` are ignored (the caller validates those).
    :return: ``(grants, bad_key, problem)``; ``bad_key`` is None when valid.
    """
    values: dict[str, tuple[str, ...]] = {}
    for name in GRANT_LISTS:
        if name not in raw:
            continue
        entries = raw[name]
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            return Grants(), name, 'must be a list of strings like "group:dba" or "user:alice"'
        for entry in entries:
            if not GRANT_RE.match(entry):
                return Grants(), name, (f'entries are "group:<name>" or "user:<name>" '
                                        f"(got {entry!r})")
        values[name] = tuple(entries)
    return Grants(**values), None, None


@dataclass(frozen=True)
class Access:
    """A user's effective role on one target and where each part came from.

    ``sources`` are ``(role, why)`` pairs, e.g. ``(OPERATOR, "global role")``,
    ``(APPROVER, "group:dba on target shop-prod")``, ``(OPERATOR, "user:olga
    on tier staging")``; :meth:`granted_by` renders them as
    ``"group:dba on target shop-prod (approver)"``.
    """

    role: Role
    sources: tuple[tuple[Role, str], ...] = ()

    def allows(self, needed: Role) -> bool:
        """True when the effective role is ``needed`` or above."""
        return self.role >= needed

    def granted_by(self, needed: Role) -> list[str]:
        """The sources that allow ``needed`` (what the audit log records)."""
        return [f"{why} ({role.label})" for role, why in self.sources if role >= needed]


def effective_access(global_role: Role, username: str, groups: Iterable[str], *,
                     target_name: str, target_grants: Grants, tier: str,
                     tier_grants: Grants) -> Access:
    """The effective role = max(global role, matching target and tier grants)."""
    groups = list(groups)
    sources: list[tuple[Role, str]] = []
    if global_role > Role.NONE:
        sources.append((global_role, "global role"))
    sources += [(role, f"{entry} on target {target_name}")
                for role, entry in target_grants.matching(username, groups)]
    sources += [(role, f"{entry} on tier {tier}")
                for role, entry in tier_grants.matching(username, groups)]
    role = max((r for r, _ in sources), default=Role.NONE)
    return Access(role, tuple(sources))
