"""Benchmark: the forecast of a 50-statement PostgreSQL plan.

Run from the project root::

    .venv/bin/python bench/forecast.py [--n 20]

What it does: builds the offline SQL of a 50-statement plan over 1,000
tables (ten revisions of five statements: ADD COLUMN with and without
defaults, SET NOT NULL, CREATE INDEX with and without CONCURRENTLY,
foreign keys, renames), then times ``webapp.core.forecast.forecast_sql``
on it ``--n`` times (pglast parsing + the lock rules) and prints the
median and the worst against the goal "under 2 s" (issue 19).

Not measured: the live numbers (rows, size, blockers read from the target
database through the agent), which are not built yet. Exit status 0
whatever the figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GOAL = 2.0
KINDS = ("ALTER TABLE t{i} ADD COLUMN c{i} integer DEFAULT 0",
         "ALTER TABLE t{i} ALTER COLUMN name SET NOT NULL",
         "CREATE INDEX CONCURRENTLY ix_t{i}_name ON t{i} (name)",
         "ALTER TABLE t{i} ADD CONSTRAINT fk_t{i} FOREIGN KEY (p) REFERENCES t{j} (id) NOT VALID",
         "ALTER TABLE t{i} RENAME COLUMN note TO remark")


def plan_sql() -> str:
    """Offline SQL of 10 revisions x 5 statements on tables among t0..t999."""
    parts = []
    for rev in range(10):
        parts.append(f"-- Running upgrade r{rev - 1 if rev else ''} -> r{rev}\n")
        for k, kind in enumerate(KINDS):
            i = (rev * 97 + k * 13) % 1000
            parts.append(kind.format(i=i, j=(i + 1) % 1000) + ";\n")
        parts.append(f"UPDATE alembic_version SET version_num='r{rev}';\n")
    return "\n".join(parts)


def main() -> None:
    from webapp.core.forecast import forecast_sql

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    sql = plan_sql()
    lines = forecast_sql(sql, "postgresql")  # untimed: imports pglast
    times = []
    for _ in range(args.n):
        started = time.perf_counter()
        forecast_sql(sql, "postgresql")
        times.append(time.perf_counter() - started)
    median, worst = statistics.median(times), max(times)
    print(f"forecast of {len(lines)} lines ({sql.count(';') - 10} statements, 10 revisions): "
          f"median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms over {args.n} runs; "
          f"goal under {GOAL:.0f} s: {'met' if worst < GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
