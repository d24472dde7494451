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
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..agent.alembic_dashboard_agent.appspec import AppSpecError, parse_app_spec
from .permissions import GRANT_LISTS, Grants, parse_grants
from .redaction import (  # noqa: F401  (re-exported: the secrets used to live here)
    MIN_SECRET_LENGTH,
    configured_secrets,
    redact_url,
    register_secrets,
    scrub_secrets,
)

TIERS = ("development", "staging", "production")
TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

_TARGET_KEYS = {
    "label",
    "tier",
    "alembic_ini",
    "ini_section",
    "url_env",
    "readonly_url_env",
    "rehearsal_url_env",
    "version_table",
    "python",
    "cwd",
    "flask_app",
    "directory",
    "env",
    "policy",
    "webhook_url",
    "queue",
    "tags",
}
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_POLICY_DEFAULTS: dict[str, int | bool] = {
    "approvals_required": 0,
    "allow_downgrade": True,
    "allow_revision_authoring": False,
    "run_on_approval": True,
}


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
    (0 = none); the other fields are booleans. ``grants`` holds the optional
    lists ``viewers``, ``operators``, ``approvers``, ``admins`` (see
    :mod:`webapp.core.permissions`).
    """

    approvals_required: int = 0
    allow_downgrade: bool = True
    allow_revision_authoring: bool = False
    run_on_approval: bool = True
    grants: Grants = field(default_factory=Grants)

    @property
    def is_protected(self) -> bool:
        """True when jobs on this target must first be approved."""
        return self.approvals_required > 0


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
    url_defaults: Mapping[str, str] = field(default_factory=dict, compare=False)

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
    return result


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
        if not isinstance(table, dict) or set(table) - {"policy"} \
                or not isinstance(table.get("policy", {}), dict):
            raise TargetsFileError(path, "only a [tiers.<tier>.policy] table is allowed",
                                   key=f"tiers.{tier}")
        policy = table.get("policy", {})
        unknown = set(policy) - set(GRANT_LISTS)
        if unknown:
            raise TargetsFileError(path, f"unknown tier policy key (known: "
                                   f"{', '.join(GRANT_LISTS)})",
                                   key=f"tiers.{tier}.policy.{sorted(unknown)[0]}")
        grants, bad, problem = parse_grants(policy)
        if bad is not None:
            raise TargetsFileError(path, problem or "invalid", key=f"tiers.{tier}.policy.{bad}")
        result[tier] = grants
    return result


def _interpreter(value: str, base: Path) -> tuple[str | None, str | None]:
    """The absolute path of a target's ``python`` and the problem with it.

    A value with a ``/`` is a path, relative to the targets file's folder like
    every other path (``~`` expanded); a bare name (``python3``) is looked up
    on the dashboard's ``PATH``. The path is made absolute but symlinks are
    kept: a virtualenv's ``bin/python`` is a symlink whose location is what
    makes it that venv's interpreter.

    :return: ``(path, None)``, or ``(None, problem)`` when the file does not
        exist or is not executable.
    """
    if "/" not in value:
        found = shutil.which(value)
        if found is None:
            return None, f"interpreter not found on PATH: {value}"
        return os.path.abspath(found), None
    path = os.path.normpath(os.path.join(base, os.path.expanduser(value)))
    if not os.path.isfile(path):
        return None, f"interpreter not found: {path}"
    if not os.access(path, os.X_OK):
        return None, f"interpreter is not executable: {path}"
    return path, None


# Complexity 31, over the limit of 15: it becomes a pydantic schema next (issue 18, item 2).
def _parse_target(path: Path, text: str, base: Path, name: str, raw: object,  # noqa: C901
                  url_defaults: Mapping[str, str]) -> Target:
    def fail(problem: str, key: str | None = None) -> TargetsFileError:
        full = f"targets.{name}" + (f".{key}" if key else "")
        return TargetsFileError(path, problem, key=full,
                                line=_line_of(text, name, key))

    if not TARGET_NAME_RE.match(name):
        raise fail("target names may use letters, digits, '.', '_' and '-' (1-64 characters)")
    if not isinstance(raw, dict):
        raise fail("must be a table")
    unknown = set(raw) - _TARGET_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise fail(f"unknown key (known keys: {', '.join(sorted(_TARGET_KEYS))})", key)

    def get_str(key: str, default: str | None = None, required: bool = False) -> str | None:
        value = raw.get(key, default)
        if value is None:
            if required:
                raise fail("is required", key)
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail("must be a non-empty string", key)
        return value

    tier = get_str("tier", required=True)
    if tier not in TIERS:
        raise fail(f"must be one of {', '.join(TIERS)} (got {tier!r})", "tier")
    flask_app = get_str("flask_app")
    if flask_app is not None:
        try:  # Flask's rule (flask --app), read without running anything
            parse_app_spec(flask_app)
        except AppSpecError as exc:
            raise fail(str(exc), "flask_app") from None
    alembic_ini_s = get_str("alembic_ini", required=flask_app is None)
    alembic_ini = (base / alembic_ini_s).resolve() if alembic_ini_s else None
    if alembic_ini is not None and not alembic_ini.is_file():
        raise fail(f"file not found: {alembic_ini}", "alembic_ini")
    cwd_s = get_str("cwd")
    cwd = (base / cwd_s).resolve() if cwd_s else None
    if cwd is not None and not cwd.is_dir():
        raise fail(f"directory not found: {cwd}", "cwd")
    python_s = get_str("python")
    python, problem = _interpreter(python_s, base) if python_s else (None, None)
    if problem:
        raise fail(problem, "python")
    directory_s = get_str("directory")
    directory = None
    if flask_app is not None and alembic_ini is None:
        directory = ((cwd or base) / (directory_s or "migrations")).resolve()
    url_env = get_str("url_env", required=flask_app is None)
    if url_env is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", url_env):
        raise fail("must be an environment variable name (letters, digits, _)", "url_env")
    extra_urls = {}
    for key in ("readonly_url_env", "rehearsal_url_env"):
        extra_urls[key] = get_str(key)
        if extra_urls[key] is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$",
                                                        extra_urls[key]):
            raise fail("must be an environment variable name (letters, digits, _)", key)
    version_table = get_str("version_table", "alembic_version")
    assert version_table is not None
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$", version_table):
        raise fail("must be a plain table name", "version_table")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise fail("must be a table of string values", "env")
    policy_raw = raw.get("policy", {})
    if not isinstance(policy_raw, dict):
        raise fail("must be a table", "policy")
    policy_values: dict[str, int | bool] = dict(_POLICY_DEFAULTS)
    grants, bad, problem = parse_grants(policy_raw)
    if bad is not None:
        raise fail(problem or "invalid", f"policy.{bad}")
    for key, value in policy_raw.items():
        if key in GRANT_LISTS:
            continue
        if key not in _POLICY_DEFAULTS:
            raise fail(f"unknown policy key (known: "
                       f"{', '.join([*_POLICY_DEFAULTS, *GRANT_LISTS])})", f"policy.{key}")
        expected = type(_POLICY_DEFAULTS[key])
        if type(value) is not expected:
            raise fail(f"must be {'an integer' if expected is int else 'true or false'}",
                       f"policy.{key}")
        if key == "approvals_required" and not 0 <= value <= 10:
            raise fail("must be between 0 and 10", f"policy.{key}")
        policy_values[key] = value
    webhook_url = get_str("webhook_url")
    if webhook_url is not None and not re.match(r"^https?://[^\s]+$", webhook_url):
        raise fail("must be an http:// or https:// URL", "webhook_url")
    queue = get_str("queue")
    if queue is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", queue):
        raise fail("must be a queue name (letters, digits, '.', '_', '-'; 1-64)", "queue")
    tags = raw.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_RE.match(t)
                                             for t in tags):
        raise fail("must be a list of tags (letters, digits, '.', '_', '-'; 1-64 each)",
                   "tags")
    return Target(
        name=name,
        webhook_url=webhook_url,
        queue=queue,
        tags=tuple(dict.fromkeys(tags)),
        label=get_str("label", name) or name,
        tier=tier,
        alembic_ini=alembic_ini,
        ini_section=get_str("ini_section", "alembic") or "alembic",
        url_env=url_env,
        **extra_urls,
        version_table=version_table,
        python=python,
        cwd=cwd,
        flask_app=flask_app,
        directory=directory,
        env=dict(env),
        policy=Policy(**policy_values, grants=grants),  # type: ignore[arg-type]
        url_defaults=dict(url_defaults),
    )
