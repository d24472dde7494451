"""Build real Alembic environments on disk for tests and benchmarks.

``make_env(root, revisions)`` writes an ``alembic.ini``, a generic ``env.py``,
``script.py.mako`` and one file per revision, exactly in the shape
``alembic revision`` produces. Each revision creates its own table, so
upgrades and downgrades do real DDL on every dialect.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ENV_PY = '''\
import os
import sys
from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)
target_metadata = None
{extra}

def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"),
                      target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    connectable = engine_from_config(config.get_section(config.config_ini_section, {{}}),
                                     prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

INI = '''\
[alembic]
script_location = %(here)s
path_separator = os
sqlalchemy.url = sqlite:///unused.db
{extra}

[loggers]
keys = root,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
'''

MAKO = '''\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision: str = ${repr(up_revision)}
down_revision: Union[str, Sequence[str], None] = ${repr(down_revision)}
branch_labels: Union[str, Sequence[str], None] = ${repr(branch_labels)}
depends_on: Union[str, Sequence[str], None] = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''


@dataclass
class Rev:
    """One revision to write. ``down`` is None, a string or a tuple."""

    revision: str
    down: str | tuple[str, ...] | None = None
    message: str | None = None
    branch_labels: tuple[str, ...] | None = None
    depends_on: str | tuple[str, ...] | None = None
    upgrade: str | None = None  # body; default: create table t_<rev>
    downgrade: str | None = None
    extra_source: str = ""  # prepended after imports (e.g. a failing import)
    create_date: str = "2026-01-01 00:00:00.000000"
    file_name: str | None = None
    subdir: str = "versions"
    fields: dict = field(default_factory=dict)


def revision_source(rev: Rev) -> str:
    """The text of one revision file, like `alembic revision` writes it."""
    down = rev.down
    revises = ", ".join(down) if isinstance(down, tuple) else (down or "")
    upgrade = rev.upgrade or (
        f'op.create_table("t_{rev.revision}", sa.Column("id", sa.Integer, primary_key=True), '
        f'sa.Column("name", sa.String(50)))')
    downgrade = rev.downgrade or f'op.drop_table("t_{rev.revision}")'
    message = rev.message or f"revision {rev.revision}"
    return textwrap.dedent(f'''\
        """{message}

        Revision ID: {rev.revision}
        Revises: {revises}
        Create Date: {rev.create_date}

        """
        from typing import Sequence, Union

        from alembic import op
        import sqlalchemy as sa
        ''') + rev.extra_source + textwrap.dedent(f'''

        # revision identifiers, used by Alembic.
        revision: str = {rev.revision!r}
        down_revision: Union[str, Sequence[str], None] = {down!r}
        branch_labels: Union[str, Sequence[str], None] = {rev.branch_labels!r}
        depends_on: Union[str, Sequence[str], None] = {rev.depends_on!r}


        def upgrade() -> None:
            {upgrade}


        def downgrade() -> None:
            {downgrade}
        ''')


def make_env(root: Path, revisions: list[Rev], *, ini_extra: str = "",
             env_extra: str = "") -> Path:
    """Write an Alembic environment under ``root``; return its alembic.ini path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "versions").mkdir(exist_ok=True)
    (root / "alembic.ini").write_text(INI.format(extra=ini_extra))
    (root / "env.py").write_text(ENV_PY.format(extra=env_extra))
    (root / "script.py.mako").write_text(MAKO)
    for rev in revisions:
        write_revision(root, rev)
    return root / "alembic.ini"


def write_revision(root: Path, rev: Rev) -> Path:
    """Write (or overwrite) one revision file; return its path."""
    folder = root / rev.subdir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (rev.file_name or f"{rev.revision}_rev.py")
    path.write_text(revision_source(rev))
    return path


def linear(n: int, prefix: str = "r") -> list[Rev]:
    """A chain r000 <- r001 <- ... of ``n`` revisions."""
    revs = []
    for i in range(n):
        rid = f"{prefix}{i:03d}"
        revs.append(Rev(rid, revs[-1].revision if revs else None,
                        create_date=f"2026-01-01 00:{i // 60:02d}:{i % 60:02d}"))
    return revs


def branched() -> list[Rev]:
    """base a1 -> a2 (branch point) -> {b1 -> b2, c1 (depends_on b1)} -> m1 (merge of b2, c1)
    -> a3; plus a labelled second base x1 (branch label 'extra')."""
    return [
        Rev("a1", None, "first"),
        Rev("a2", "a1", "second, the branch point"),
        Rev("b1", "a2", "left branch one"),
        Rev("b2", "b1", "left branch two"),
        Rev("c1", "a2", "right branch", depends_on="b1"),
        Rev("m1", ("b2", "c1"), "merge left and right", upgrade="pass", downgrade="pass"),
        Rev("a3", "m1", "after the merge"),
        Rev("x1", None, "extra branch base", branch_labels=("extra",)),
        Rev("x2", "x1", "extra branch head"),
    ]


def write_targets_file(path: Path, targets: dict[str, dict]) -> Path:
    """Write a targets TOML file from ``{name: {key: value, "policy": {...}}}``."""
    lines = []
    for name, spec in targets.items():
        lines.append(f"[targets.{name}]")
        for key, value in spec.items():
            if isinstance(value, dict):
                continue
            lines.append(f"{key} = {_toml(value)}")
        for key, value in spec.items():
            if isinstance(value, dict):
                lines.append(f"[targets.{name}.{key}]")
                lines.extend(f"{k} = {_toml(v)}" for k, v in value.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def sqlite_url(path: Path) -> str:
    """URL of an empty SQLite database at ``path`` (the file is created: the
    dashboard refuses to run jobs on a SQLite file that does not exist)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return f"sqlite:///{path}"
