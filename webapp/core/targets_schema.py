"""The targets file's entries as pydantic models: the rules of each key.

:class:`TargetEntry` is one ``[targets.<name>]`` table, :class:`PolicyEntry`
its ``[targets.<name>.policy]`` table, :class:`TierPolicyEntry` one
``[tiers.<tier>.policy]`` table. Every rule raises a ``PydanticCustomError``
whose message is the problem exactly as :class:`webapp.core.targets.TargetsFileError`
words it; :func:`webapp.core.targets.load_targets` turns the first error of a
``ValidationError`` (its ``loc`` is the key path) into that error. Unknown keys
are refused (``extra="forbid"``).

Paths are resolved against the targets file's folder, given as the
validation context ``{"base": Path}``.

Flask-free; it only reads the file system (paths, interpreters).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from ..agent.alembic_dashboard_agent.appspec import AppSpecError, parse_app_spec
from ..agent.alembic_dashboard_agent.row_sample import ROWS_MAX as STAIRWAY_ROWS_MAX
from .permissions import GRANT_LISTS, parse_grants

TIERS = ("development", "staging", "production")
TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
POLICY_FLAGS = ("approvals_required", "allow_downgrade", "allow_revision_authoring",
                "run_on_approval")
# promotion: an upgrade here needs its revisions applied on promote_from first
PROMOTION_KEYS = ("promote_from", "promote_requires_rehearsal", "promote_requires_stairway")
# the lock guard of a job (seconds, 0 = off; retries after a lock timeout)
LOCK_GUARD_KEYS = ("lock_timeout", "statement_timeout", "lock_retries")
#: the lock guard a tier gets when its target's policy leaves a key out
TIER_LOCK_GUARDS = {
    "production": {"lock_timeout": 5.0, "statement_timeout": 0.0, "lock_retries": 3},
    "staging": {"lock_timeout": 10.0, "statement_timeout": 0.0, "lock_retries": 2},
    "development": {"lock_timeout": 0.0, "statement_timeout": 0.0, "lock_retries": 0},
}
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENV_NAME_PROBLEM = "must be an environment variable name (letters, digits, _)"


def problem(text: str) -> PydanticCustomError:
    """A validation error whose message is exactly ``text`` (braces and all)."""
    return PydanticCustomError("targets_file", "{problem}", {"problem": text})


def _text(value: object) -> str | None:
    if value is None:  # absent (TOML has no null)
        return None
    if not isinstance(value, str) or not value.strip():
        raise problem("must be a non-empty string")
    return value


def _string_table(value: object) -> object:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise problem("must be a table of string values")
    return value


def _tag_list(value: object) -> object:
    if not isinstance(value, list) or not all(isinstance(t, str) and TAG_RE.match(t)
                                              for t in value):
        raise problem("must be a list of tags (letters, digits, '.', '_', '-'; 1-64 each)")
    return tuple(dict.fromkeys(value))


def _table(value: object) -> object:
    if not isinstance(value, dict):
        raise problem("must be a table")
    return value


def _integer(value: object) -> object:
    if type(value) is not int:
        raise problem("must be an integer")
    return value


def _seconds(value: object) -> object:
    if type(value) not in (int, float) or not 0 <= value <= 86400:
        raise problem("must be a number of seconds between 0 (off) and 86400")
    return float(value)


def _retries(value: object) -> object:
    if type(value) is not int or not 0 <= value <= 10:
        raise problem("must be an integer between 0 and 10")
    return value


def _sample_rows(value: object) -> object:
    if type(value) is not int or not 0 <= value <= STAIRWAY_ROWS_MAX:
        raise problem(f"must be a whole number of rows per table from 0 (schema only) to "
                      f"{STAIRWAY_ROWS_MAX}")
    return value


def _boolean(value: object) -> object:
    if type(value) is not bool:
        raise problem("must be true or false")
    return value


Text = Annotated[str | None, BeforeValidator(_text)]
PathText = Annotated[Path | None, BeforeValidator(_text)]
GrantList = tuple[str, ...]
Flag = Annotated[bool, BeforeValidator(_boolean)]


class _GrantLists(BaseModel):
    """The grant lists of a policy table (rules: :func:`webapp.core.permissions.parse_grants`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    viewers: GrantList = ()
    operators: GrantList = ()
    approvers: GrantList = ()
    admins: GrantList = ()

    @field_validator(*GRANT_LISTS, mode="before")
    @classmethod
    def _grant_list(cls, value: object, info: ValidationInfo) -> object:
        assert info.field_name is not None
        grants, bad, why = parse_grants({info.field_name: value})
        if bad is not None:
            raise problem(why or "invalid")
        return getattr(grants, info.field_name)


class TierPolicyEntry(_GrantLists):
    """One ``[tiers.<tier>.policy]`` table: grant lists only."""


class PolicyEntry(_GrantLists):
    """One ``[targets.<name>.policy]`` table: the flags and the grant lists."""

    approvals_required: Annotated[int, BeforeValidator(_integer)] = 0
    allow_downgrade: Flag = True
    allow_revision_authoring: Flag = False
    run_on_approval: Flag = True
    # None: the tier's default (TIER_LOCK_GUARDS)
    lock_timeout: Annotated[float | None, BeforeValidator(_seconds)] = None
    statement_timeout: Annotated[float | None, BeforeValidator(_seconds)] = None
    lock_retries: Annotated[int | None, BeforeValidator(_retries)] = None
    # the staging target this one is promoted from (another target's name,
    # checked by webapp.core.targets.load_targets once every target is read)
    promote_from: Text = None
    promote_requires_rehearsal: Flag = False
    promote_requires_stairway: Flag = False

    def lock_guard(self, tier: str) -> dict:
        """``{"lock_timeout", "statement_timeout", "lock_retries"}``: the keys
        given here, the others from ``tier``'s defaults (:data:`TIER_LOCK_GUARDS`)."""
        defaults = TIER_LOCK_GUARDS.get(tier, TIER_LOCK_GUARDS["development"])
        return {key: defaults[key] if getattr(self, key) is None else getattr(self, key)
                for key in LOCK_GUARD_KEYS}

    @field_validator("approvals_required")
    @classmethod
    def _approvals(cls, value: int) -> int:
        if not 0 <= value <= 10:
            raise problem("must be between 0 and 10")
        return value


class StairwayEntry(BaseModel):
    """One ``[targets.<name>.stairway]`` table: ``rows``, the rows per table
    the stairway test copies to its scratch copy and checks (0: schema only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: Annotated[int, BeforeValidator(_sample_rows)] = 0


def _base(info: ValidationInfo) -> Path:
    assert isinstance(info.context, dict), "validate with context={'base': <folder>}"
    return info.context["base"]


def _required_without_flask_app(value: object, info: ValidationInfo) -> None:
    if value is None and info.data.get("flask_app") is None and "flask_app" in info.data:
        raise problem("is required")


class TargetEntry(BaseModel):
    """One ``[targets.<name>]`` table, validated in the order of its fields
    (the first problem is the one reported). Paths come out absolute;
    ``python`` is the interpreter's absolute path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: Text = Field(None, validate_default=True)
    flask_app: Text = None
    alembic_ini: PathText = Field(None, validate_default=True)
    cwd: PathText = None
    python: Text = None
    directory: Text = None
    url_env: Text = Field(None, validate_default=True)
    readonly_url_env: Text = None
    rehearsal_url_env: Text = None
    version_table: Text = "alembic_version"
    env: Annotated[dict[str, str], BeforeValidator(_string_table)] = Field(default_factory=dict)
    policy: Annotated[PolicyEntry, BeforeValidator(_table)] = Field(default_factory=PolicyEntry)
    stairway: Annotated[StairwayEntry, BeforeValidator(_table)] = Field(
        default_factory=StairwayEntry)
    webhook_url: Text = None
    queue: Text = None
    tags: Annotated[tuple[str, ...], BeforeValidator(_tag_list)] = ()
    label: Text = None
    ini_section: Text = "alembic"

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str | None) -> str:
        if value is None:
            raise problem("is required")
        if value not in TIERS:
            raise problem(f"must be one of {', '.join(TIERS)} (got {value!r})")
        return value

    @field_validator("flask_app")
    @classmethod
    def _flask_app(cls, value: str | None) -> str | None:
        if value is not None:
            try:  # Flask's rule (flask --app), read without running anything
                parse_app_spec(value)
            except AppSpecError as exc:
                raise problem(str(exc)) from None
        return value

    @field_validator("alembic_ini")
    @classmethod
    def _alembic_ini(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        _required_without_flask_app(value, info)
        if value is None:
            return None
        value = (_base(info) / value).resolve()
        if not value.is_file():
            raise problem(f"file not found: {value}")
        return value

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        value = (_base(info) / value).resolve()
        if not value.is_dir():
            raise problem(f"directory not found: {value}")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        found, why = _interpreter(value, _base(info))
        if why:
            raise problem(why)
        return found

    @field_validator("url_env", "readonly_url_env", "rehearsal_url_env")
    @classmethod
    def _env_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.field_name == "url_env":
            _required_without_flask_app(value, info)
        if value is not None and not _ENV_NAME_RE.match(value):
            raise problem(_ENV_NAME_PROBLEM)
        return value

    @field_validator("version_table")
    @classmethod
    def _version_table(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$", value):
            raise problem("must be a plain table name")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s]+$", value):
            raise problem("must be an http:// or https:// URL")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", value):
            raise problem("must be a queue name (letters, digits, '.', '_', '-'; 1-64)")
        return value

    def migrations_directory(self, base: Path) -> Path | None:
        """The Flask-Migrate folder of a ``flask_app`` target without
        ``alembic_ini``: ``directory`` (default ``migrations``) relative to
        ``cwd`` or to ``base`` (the targets file's folder); else None."""
        if self.flask_app is None or self.alembic_ini is not None:
            return None
        return ((self.cwd or base) / (self.directory or "migrations")).resolve()


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
