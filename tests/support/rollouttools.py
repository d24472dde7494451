"""Helpers for rollout tests: a fleet of tenant databases on one Alembic
environment, waiting for a rollout, reading its jobs' run intervals."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from support.envtools import Rev, make_env, sqlite_url, write_targets_file
from webapp.extensions import db
from webapp.models import Job


def two_revisions(sleep: float = 0) -> list[Rev]:
    """r000 <- r001, each creating a table; r000 prints the migration process's
    niceness ("niceness N"), r001 sleeps ``sleep`` seconds first."""
    first = ('import os; print(f"niceness {os.nice(0)}", flush=True); '
             'op.create_table("t_r000", sa.Column("id", sa.Integer, primary_key=True))')
    body = (f"import time; time.sleep({sleep}); " if sleep else "") + \
        'op.create_table("t_r001", sa.Column("id", sa.Integer, primary_key=True))'
    return [Rev("r000", None, upgrade=first), Rev("r001", "r000", upgrade=body)]


def fleet(tmp_path: Path, monkeypatch, names: list[str], *, sleep: float = 0,
          spec: dict | None = None, overrides: dict[str, dict] | None = None) -> Path:
    """Write one Alembic environment and a targets file with a SQLite tenant
    database per name (tier production, tags ``["tenant"]`` plus ``"eu"`` for
    even positions; ``spec`` overrides keys of every target, ``overrides[name]``
    those of one). Sets each ``<NAME>_URL``; returns the targets file."""
    ini = make_env(tmp_path / "env", two_revisions(sleep))
    targets = {}
    for i, name in enumerate(names):
        var = name.upper().replace("-", "_") + "_URL"
        monkeypatch.setenv(var, sqlite_url(tmp_path / "db" / f"{name}.db"))
        targets[name] = {"tier": "production", "alembic_ini": str(ini), "url_env": var,
                         "tags": ["tenant", "eu"] if i % 2 == 0 else ["tenant"],
                         **(spec or {}), **(overrides or {}).get(name, {})}
    return write_targets_file(tmp_path / "targets.toml", targets)


def wait_rollout(client, rollout_id: int, headers: dict, timeout: float = 240,
                 until=lambda r: r["status"] not in ("running", "paused")) -> dict:
    """Poll ``GET /api/v1/rollouts/<id>`` (which records ended steps) until
    ``until(json)``; ``timeout`` (s) only guards against a hang: the 30-tenant
    rollout takes about 25 s on a quiet machine and twice that on a slow one."""
    deadline, pause = time.monotonic() + timeout, 0.02
    while True:
        data = client.get(f"/api/v1/rollouts/{rollout_id}", headers=headers).json
        if until(data):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(pause)
        pause = min(pause * 2, 0.3)


def job_intervals(app, job_ids) -> list[tuple[float, float]]:
    """(started, finished) of each job, in seconds since the epoch (UTC)."""
    with app.app_context():
        jobs = db.session.execute(db.select(Job).where(Job.id.in_(list(job_ids)))).scalars()
        return [(j.started_at.timestamp(), j.finished_at.timestamp()) for j in jobs]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(f, -1) for _, f in intervals],
                    key=lambda e: (e[0], e[1]))  # an end at t comes before a start at t
    running = best = 0
    for _, delta in events:
        running += delta
        best = max(best, running)
    return best


def jobs_per_target(app) -> dict[str, int]:
    """How many jobs each target has had."""
    with app.app_context():
        rows = db.session.execute(sa.select(Job.target, sa.func.count()).group_by(Job.target))
        return dict(rows.all())
