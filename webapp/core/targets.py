"""Targets: the databases the dashboard manages, read from a TOML file.

A *target* is one database managed by one Alembic environment. Targets are
configured in the TOML file named by ``DASHBOARD_TARGETS`` (format fixed:
README "Targets file"). The database URL never appears in that file: each target names
the environment variable (``url_env``) that holds it.

This module is Flask-free; it only reads files and the environment. The secrets
(:func:`redact_url`, :func:`scrub_secrets`...) live in :mod:`webapp.core.redaction`
and are re-exported here.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .lint_findings import LEVELS as LINT_LEVELS
from .lint_findings import RULES as LINT_RULES
from .permissions import GRANT_LISTS, Grants
from .redaction import (  # noqa: F401  (re-exported: the secrets used to live here)
    MIN_SECRET_LENGTH,
    configured_secrets,
    redact_url,
    register_secrets,
    scrub_secrets,
)
from .targets_schema import (  # noqa: F401  (TAG_RE, _interpreter re-exported)
    LOCK_GUARD_KEYS,
    POLICY_FLAGS,
    PROMOTION_KEYS,
    TAG_RE,
    TARGET_NAME_RE,
    TIERS,
    TargetEntry,
    TierPolicyEntry,
    _interpreter,
)

# every key of a [targets.<name>] table; any other is refused
_TARGET_KEYS = set(TargetEntry.model_fields)


class TargetsFileError(Exception):
    """The targets file cannot be used.

    ``str(error)`` names the file, the line (when known), the key and the
    problem, e.g. ``targets.toml, line 7, key targets.shop.tier: must be one
    of development, staging, production (got 'prod')``.
    """

    def __init__(self, path: Path | str, problem: str, *, key: str | None = None,
                 line: int | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.key = key
        self.line = line
        where = [f"targets file {self.path}"]
        if line is not None:
            where.append(f"line {line}")
        if key is not None:
            where.append(f"key {key}")
        super().__init__(", ".join(where) + ": " + problem)


@dataclass(frozen=True)
class Policy:
    """What a target allows. Read from ``[targets.<name>.policy]``.

    ``approvals_required`` is the number of distinct approvers a job needs
    (0 = none); the other flags are booleans. ``grants`` holds the optional
    lists ``viewers``, ``operators``, ``approvers``, ``admins`` (see
    :mod:`webapp.core.permissions`). ``lock_timeout`` and ``statement_timeout``
    (seconds, 0 = off) and ``lock_retries`` are a job's lock guard, the
    tier's defaults filled in (:data:`~webapp.core.targets_schema.TIER_LOCK_GUARDS`).

    ``promote_from`` names the (staging) target an upgrade here is promoted
    from: every revision it applies must be applied there first, with the
    same file; ``promote_requires_rehearsal`` / ``promote_requires_stairway``
    also ask for a passing rehearsal / stairway test of the exact plan on
    this target (:mod:`webapp.services.promotion`). None / False: no gate.
    """

    approvals_required: int = 0
    allow_downgrade: bool = True
    allow_revision_authoring: bool = False
    run_on_approval: bool = True
    grants: Grants = field(default_factory=Grants)
    lock_timeout: float = 0.0
    statement_timeout: float = 0.0
    lock_retries: int = 0
    promote_from: str | None = None
    promote_requires_rehearsal: bool = False
    promote_requires_stairway: bool = False

    @property
    def lock_guard(self) -> dict:
        """``{"lock_timeout", "statement_timeout", "lock_retries"}``, as a run order carries it."""
        return {key: getattr(self, key) for key in LOCK_GUARD_KEYS}

    @property
    def is_protected(self) -> bool:
        """True when jobs on this target must first be approved."""
        return self.approvals_required > 0


@dataclass(frozen=True)
class LintPolicy:
    """A tier's ``[tiers.<tier>.lint]`` table: ``levels`` maps lint rule ids
    (:data:`~webapp.core.lint_findings.RULES`) to "error" | "warning" |
    "info", overriding lint's own level; ``block_on_error``: a plan with an
    error-level finding may not be requested or run on the tier's targets."""

    levels: Mapping[str, str] = field(default_factory=dict)
    block_on_error: bool = False

    def apply(self, findings: list[dict]) -> list[dict]:
        """``findings`` (dicts as :meth:`Finding.as_dict` gives) with each
        rule's level from :attr:`levels` (others unchanged); new dicts."""
        return [{**f, "level": self.levels.get(f.get("rule"), f.get("level") or "warning")}
                for f in findings]

    def blocking(self, findings: list[dict]) -> list[dict]:
        """The error-level ``findings`` when the tier blocks on them, else []."""
        if not self.block_on_error:
            return []
        return [f for f in findings if f.get("level") == "error"]


@dataclass(frozen=True)
class Target:
    """One configured target.

    Paths are absolute (resolved relative to the targets file). ``url_env``
    names the environment variable holding the SQLAlchemy URL; use
    :meth:`database_url` to read it.
    """

    name: str
    label: str
    tier: str
    alembic_ini: Path | None
    ini_section: str = "alembic"
    url_env: str | None = None
    # optional: a read-only account for read paths (plans, SQL, previews, drift,
    # status), and a separate server/account for rehearsals (MySQL/MariaDB)
    readonly_url_env: str | None = None
    rehearsal_url_env: str | None = None
    version_table: str = "alembic_version"
    python: str | None = None
    cwd: Path | None = None
    flask_app: str | None = None
    directory: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    policy: Policy = field(default_factory=Policy)
    tags: tuple[str, ...] = ()  # free labels ("eu", "tenant") that fleet rollouts select by
    webhook_url: str | None = None
    queue: str | None = None  # the Celery queue whose workers run this target's jobs
    tier_grants: Grants = field(default_factory=Grants)  # [tiers.<tier>.policy] lists
    lint: LintPolicy = field(default_factory=LintPolicy)  # [tiers.<tier>.lint]
    url_defaults: Mapping[str, str] = field(default_factory=dict, compare=False)
    stairway_rows: int = 0  # [targets.<name>.stairway] rows: the stairway's row sample

    def database_url(self, environ: Mapping[str, str] | None = None) -> str:
        """Return the target's database URL (may contain a password).

        :param environ: where to look for ``url_env``; default ``os.environ``.
        :raises TargetUrlMissing: the variable is not set or empty.
        """
        environ = os.environ if environ is None else environ
        if not self.url_env:
            raise TargetUrlMissing(f"target {self.name} has no url_env")
        value = environ.get(self.url_env) or self.url_defaults.get(self.url_env)
        if not value:
            raise TargetUrlMissing(
                f"environment variable {self.url_env} is not set "
                f"(it holds the database URL of target {self.name})"
            )
        return value

    def _optional_url(self, name: str | None, environ: Mapping[str, str] | None) -> str | None:
        if not name:
            return None
        environ = os.environ if environ is None else environ
        value = environ.get(name) or self.url_defaults.get(name)
        if not value:
            raise TargetUrlMissing(f"environment variable {name} is not set (target "
                                   f"{self.name} names it in its targets-file entry)")
        return value

    def readonly_database_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The URL of a read-only account for read paths (``readonly_url_env``),
        or None when the targets file names none.

        :raises TargetUrlMissing: the file names a variable that is unset.
        """
        return self._optional_url(self.readonly_url_env, environ)

    def rehearsal_database_url(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The URL of a separate rehearsal server/account (``rehearsal_url_env``),
        or None when the targets file names none.

        :raises TargetUrlMissing: the file names a variable that is unset.
        """
        return self._optional_url(self.rehearsal_url_env, environ)

    @property
    def working_directory(self) -> Path:
        """Directory the target's own code runs in: ``cwd`` or the ini's folder."""
        if self.cwd is not None:
            return self.cwd
        if self.alembic_ini is not None:
            return self.alembic_ini.parent
        assert self.directory is not None
        return self.directory.parent


class TargetUrlMissing(Exception):
    """The environment variable that should hold a target's URL is unset."""


def _line_of(text: str, name: str, key: str | None) -> int | None:
    """Best-effort line number of ``[targets.name]``, or of ``key`` inside it.

    ``key`` may be dotted (``policy.approvals_required``): the key is then
    looked up in the ``[targets.name.policy]`` sub-table.
    """
    lines = text.splitlines()
    table, _, leaf = (key or "").rpartition(".")
    path = r"\s*\.\s*".join(
        [r"targets", r"(\"?)" + re.escape(name) + r"\1"]
        + [re.escape(part) for part in table.split(".") if part])
    header = re.compile(r"^\s*\[\s*" + path + r"\s*\]")
    any_header = re.compile(r"^\s*\[")
    for i, line in enumerate(lines):
        if header.match(line):
            if not leaf:
                return i + 1
            key_re = re.compile(r"^\s*" + re.escape(leaf) + r"\s*=")
            for j in range(i + 1, len(lines)):
                if any_header.match(lines[j]):
                    break
                if key_re.match(lines[j]):
                    return j + 1
            return i + 1
    return None


def load_targets(path: str | Path, *, url_defaults: Mapping[str, str] | None = None
                 ) -> dict[str, Target]:
    """Read and validate a targets file.

    :param path: the TOML file (``DASHBOARD_TARGETS``).
    :param url_defaults: fallback values for ``url_env`` variables (the
        bundled demo uses this for its SQLite files); never used for a
        user's file.
    :return: targets by name, in file order.
    :raises TargetsFileError: unreadable file, TOML syntax error, unknown or
        missing keys, wrong types, bad tier, paths that do not exist.
    """
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetsFileError(path, f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        raise TargetsFileError(path, f"invalid TOML: {exc}",
                               line=int(found.group(1)) if found else None) from None
    unknown_top = set(data) - {"targets", "tiers"}
    if unknown_top:
        key = sorted(unknown_top)[0]
        raise TargetsFileError(path, "unknown top-level key (expected [targets.<name>] "
                               "and optional [tiers.<tier>.policy])", key=key)
    tier_grants = _tier_grants(path, data.get("tiers", {}))
    tier_lint = _tier_lint(path, data.get("tiers", {}))
    raw_targets = data.get("targets")
    if not isinstance(raw_targets, dict) or not raw_targets:
        raise TargetsFileError(path, "no targets defined; add a [targets.<name>] table",
                               key="targets")
    base = path.parent
    result: dict[str, Target] = {}
    for name, raw in raw_targets.items():
        result[name] = _parse_target(path, text, base, name, raw, url_defaults or {})
        tier = tier_grants.get(result[name].tier)
        if tier is not None:
            result[name] = replace(result[name], tier_grants=tier)
        lint = tier_lint.get(result[name].tier)
        if lint is not None:
            result[name] = replace(result[name], lint=lint)
    _check_promotions(path, text, result)
    return result


def _check_promotions(path: Path, text: str, targets: Mapping[str, Target]) -> None:
    """Every ``promote_from`` names another configured target; the
    ``promote_requires_*`` flags need a ``promote_from``.

    :raises TargetsFileError: the first target that breaks a rule.
    """
    for name, target in targets.items():
        policy = target.policy
        source = policy.promote_from

        def fail(problem: str, key: str, name: str = name) -> TargetsFileError:
            return TargetsFileError(path, problem, key=f"targets.{name}.{key}",
                                    line=_line_of(text, name, key))

        if source is not None and source == name:
            raise fail("must name another target (the staging target this one is "
                       "promoted from), not itself", "policy.promote_from")
        if source is not None and source not in targets:
            raise fail(f"names no configured target: {source!r} (known: "
                       f"{', '.join(n for n in targets if n != name)})",
                       "policy.promote_from")
        for flag in ("promote_requires_rehearsal", "promote_requires_stairway"):
            if getattr(policy, flag) and source is None:
                raise fail("needs promote_from (the staging target this one is promoted "
                           "from)", f"policy.{flag}")


def _tier_grants(path: Path, raw: object) -> dict[str, Grants]:
    """``[tiers.<tier>.policy]`` tables → grants by tier.

    :raises TargetsFileError: unknown tier or key, malformed list.
    """
    if not isinstance(raw, dict):
        raise TargetsFileError(path, "must be a table of [tiers.<tier>.policy]", key="tiers")
    result = {}
    for tier, table in raw.items():
        if tier not in TIERS:
            raise TargetsFileError(path, f"must be one of {', '.join(TIERS)}",
                                   key=f"tiers.{tier}")
        if not isinstance(table, dict) or set(table) - {"policy", "lint"} \
                or not isinstance(table.get("policy", {}), dict):
            raise TargetsFileError(path, "only [tiers.<tier>.policy] and [tiers.<tier>.lint] "
                                   "tables are allowed", key=f"tiers.{tier}")
        policy = table.get("policy", {})
        try:
            entry = TierPolicyEntry.model_validate(policy)
        except ValidationError as exc:
            unknown = sorted(str(e["loc"][0]) for e in exc.errors()
                             if e["type"] == "extra_forbidden")
            key, why = (f"policy.{unknown[0]}", f"unknown tier policy key (known: "
                        f"{', '.join(GRANT_LISTS)})") if unknown \
                else _first_problem(exc, {"policy": policy}, "policy")
            raise TargetsFileError(path, why, key=f"tiers.{tier}.{key}") from None
        result[tier] = Grants(**{name: getattr(entry, name) for name in GRANT_LISTS})
    return result


def _tier_lint(path: Path, raw: Mapping[str, object]) -> dict[str, LintPolicy]:
    """``[tiers.<tier>.lint]`` tables → lint policy by tier (``raw`` is the
    ``tiers`` table, already checked by :func:`_tier_grants`).

    :raises TargetsFileError: not a table, an unknown rule, a level other
        than error / warning / info, ``block_on_error`` not a boolean.
    """
    result = {}
    for tier, table in raw.items():
        lint = table.get("lint") if isinstance(table, dict) else None
        if lint is None:
            continue
        where = f"tiers.{tier}.lint"
        if not isinstance(lint, dict):
            raise TargetsFileError(path, "must be a table", key=where)
        levels, block = {}, lint.get("block_on_error", False)
        if type(block) is not bool:
            raise TargetsFileError(path, "must be true or false",
                                   key=f"{where}.block_on_error")
        for rule, level in lint.items():
            if rule == "block_on_error":
                continue
            if rule not in LINT_RULES:
                raise TargetsFileError(path, f"unknown lint rule (known: block_on_error, "
                                       f"{', '.join(LINT_RULES)})", key=f"{where}.{rule}")
            if level not in LINT_LEVELS:
                raise TargetsFileError(path, f"must be one of {', '.join(LINT_LEVELS)}",
                                       key=f"{where}.{rule}")
            levels[rule] = level
        result[tier] = LintPolicy(levels, block)
    return result


def _error_rank(error: ErrorDetails, raw: Mapping[str, object]) -> tuple:
    """Where ``error`` comes in the order the keys are checked: a target's
    unknown keys first (by name), then its keys in the order of
    :class:`TargetEntry`'s fields; in a policy table its grant lists first
    (viewers, operators, approvers, admins), then its keys in file order."""
    loc = [str(part) for part in error["loc"]]
    if len(loc) == 1 and error["type"] == "extra_forbidden":
        return (0, loc[0])
    fields = list(TargetEntry.model_fields)
    where = fields.index(loc[0]) if loc[0] in fields else len(fields)
    if len(loc) < 2:
        return (1, where, -1, -1)
    table = raw.get(loc[0])
    keys = list(table) if isinstance(table, dict) else []
    if loc[1] in GRANT_LISTS:
        return (1, where, 0, GRANT_LISTS.index(loc[1]))
    return (1, where, 1, keys.index(loc[1]) if loc[1] in keys else len(keys))


def _first_problem(exc: ValidationError, raw: Mapping[str, object], prefix: str = ""
                   ) -> tuple[str, str]:
    """The first problem of ``exc`` (see :func:`_error_rank`) as ``(key, problem)``:
    the dotted key under the validated table and the wording of
    :class:`TargetsFileError`. ``prefix`` is prepended to every location
    (``"policy"`` for a tier's policy table, validated alone)."""
    errors = [{**e, "loc": (prefix, *e["loc"]) if prefix else e["loc"]} for e in exc.errors()]
    error = min(errors, key=lambda e: _error_rank(e, raw))  # type: ignore[arg-type]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        if len(error["loc"]) == 1:
            return key, f"unknown key (known keys: {', '.join(sorted(_TARGET_KEYS))})"
        if error["loc"][0] == "stairway":
            return key, "unknown stairway key (known: rows)"
        known = [*POLICY_FLAGS, *LOCK_GUARD_KEYS, *PROMOTION_KEYS, *GRANT_LISTS]
        return key, f"unknown policy key (known: {', '.join(known)})"
    return key, error["msg"]


def _parse_target(path: Path, text: str, base: Path, name: str, raw: object,
                  url_defaults: Mapping[str, str]) -> Target:
    """One ``[targets.<name>]`` table → :class:`Target` (rules: :class:`TargetEntry`).

    :raises TargetsFileError: the first problem, with its key and line.
    """
    def fail(problem: str, key: str | None = None) -> TargetsFileError:
        full = f"targets.{name}" + (f".{key}" if key else "")
        return TargetsFileError(path, problem, key=full,
                                line=_line_of(text, name, key))

    if not TARGET_NAME_RE.match(name):
        raise fail("target names may use letters, digits, '.', '_' and '-' (1-64 characters)")
    if not isinstance(raw, dict):
        raise fail("must be a table")
    try:
        entry = TargetEntry.model_validate(raw, context={"base": base})
    except ValidationError as exc:
        key, problem = _first_problem(exc, raw)
        raise fail(problem, key) from None
    policy = entry.policy
    return Target(
        name=name,
        label=entry.label or name,
        tier=entry.tier or "",
        alembic_ini=entry.alembic_ini,
        ini_section=entry.ini_section or "alembic",
        url_env=entry.url_env,
        readonly_url_env=entry.readonly_url_env,
        rehearsal_url_env=entry.rehearsal_url_env,
        version_table=entry.version_table or "alembic_version",
        python=entry.python,
        cwd=entry.cwd,
        flask_app=entry.flask_app,
        directory=entry.migrations_directory(base),
        env=dict(entry.env),
        policy=Policy(**{flag: getattr(policy, flag) for flag in (*POLICY_FLAGS,
                                                                   *PROMOTION_KEYS)},
                      grants=Grants(**{n: getattr(policy, n) for n in GRANT_LISTS}),
                      **policy.lock_guard(entry.tier or "")),
        tags=entry.tags,
        webhook_url=entry.webhook_url,
        queue=entry.queue,
        url_defaults=dict(url_defaults),
        stairway_rows=entry.stairway.rows,
    )
