"""The bundled demo: two targets on SQLite files in the instance folder.

``examples/targets.toml`` names the targets; their URLs default to
``instance/demo-<stage>.db``. :func:`prepare_demo_databases` brings a fresh
demo database to its starting revision so a newcomer sees a database that is
part-way (some revisions pending). Existing databases are never touched.
"""

from __future__ import annotations

from pathlib import Path

from .runner import run_command
from .status import DatabaseUnavailable, current_heads
from .targets import Target, load_targets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_TARGETS_FILE = EXAMPLES / "targets.toml"

#: revision each demo database starts at (the rest stays pending)
DEMO_START = {
    "demo-staging": "a05f2a9c7eb9",  # main line past the merge point; 2 + reporting pending
    "demo-production": "5e0a7b4d2f64",  # before the branch point's second branch
}


def demo_targets(instance_path: Path) -> dict[str, Target]:
    """Load the demo targets with URLs defaulting to SQLite files in ``instance_path``.

    :raises TargetsFileError: only if the bundled file is broken.
    """
    defaults = {
        "DEMO_STAGING_DATABASE_URL": f"sqlite:///{instance_path / 'demo-staging.db'}",
        "DEMO_PRODUCTION_DATABASE_URL": f"sqlite:///{instance_path / 'demo-production.db'}",
    }
    return load_targets(DEMO_TARGETS_FILE, url_defaults=defaults)


def prepare_demo_databases(targets: dict[str, Target]) -> list[str]:
    """Upgrade each *empty* demo database to its :data:`DEMO_START` revision.

    :return: one line per target saying what was done.
    :raises TargetProcessError: an upgrade failed.
    """
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    report = []
    for name, start in DEMO_START.items():
        target = targets.get(name)
        if target is None:
            continue
        url = target.database_url()
        engine = create_engine(url, poolclass=NullPool)
        try:
            current = current_heads(engine, target.version_table)
        except DatabaseUnavailable:
            current = ()  # the SQLite file does not exist yet
        finally:
            engine.dispose()
        if current:
            report.append(f"{name}: left as it is (at {', '.join(current)})")
            continue
        run_command(target, "upgrade", start, url=url)
        report.append(f"{name}: upgraded to {start}")
    return report
