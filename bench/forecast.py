"""Benchmark: the forecast of a 50-statement PostgreSQL plan.

Run from the project root::

    .venv/bin/python bench/forecast.py [--n 20]

What it does: builds the offline SQL of a 50-statement plan over 1,000
tables (ten revisions of five statements: ADD COLUMN with and without
defaults, SET NOT NULL, CREATE INDEX with and without CONCURRENTLY,
foreign keys, renames), then times ``webapp.core.forecast.forecast_sql``
on it ``--n`` times (pglast parsing + the lock rules) and prints the
median and the worst against the goal "under 2 s" (issue 19).

With ``--pg postgresql+psycopg://USER@HOST/DB`` (a server where the user
may create a database) it also creates a database of 1,000 tables (t0 ..
t999, a few rows each, analysed), and times the whole forecast: the parse
plus the live numbers (rows, size, blockers) read through the agent's
read-only connection (a cold agent start each time, no fork server). The
database is dropped afterwards. Exit status 0 whatever the figures.
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


def _live(server_url: str, sql: str, n: int) -> None:
    """Time forecast_sql + with_live_numbers against 1,000 tables on PostgreSQL."""
    import os
    import secrets
    import tempfile

    import sqlalchemy as sa

    from webapp.core.forecast import forecast_sql, with_live_numbers
    from webapp.core.targets import load_targets

    name = "adbench_" + secrets.token_hex(4)
    server = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(
        hide_password=False)
    try:
        db = sa.create_engine(url)
        with db.begin() as conn:
            conn.execute(sa.text(
                "DO $$ BEGIN FOR i IN 0..999 LOOP EXECUTE format('CREATE TABLE t%s (id "
                "integer PRIMARY KEY, name varchar(50), note text, p integer); INSERT INTO "
                "t%s SELECT g, ''n'', ''x'', g FROM generate_series(1, 10) g', i, i); "
                "END LOOP; END $$"))
        with db.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
        db.dispose()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "targets.toml")
            path.write_text(f'[targets.bench]\ntier = "staging"\nalembic_ini = '
                            f'"{ROOT / "examples/demo/alembic.ini"}"\n'
                            'url_env = "BENCH_FORECAST_URL"\n')
            os.environ["BENCH_FORECAST_URL"] = url
            target = load_targets(path)["bench"]
            times = []
            for _ in range(n):
                started = time.perf_counter()
                lines = with_live_numbers(target, forecast_sql(sql, "postgresql"), url=url)
                times.append(time.perf_counter() - started)
            filled = sum(1 for line in lines if line["rows"] is not None)
            median, worst = statistics.median(times), max(times)
            print(f"with live numbers from a database of 1,000 tables ({filled} lines with "
                  f"rows): median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms over "
                  f"{n} runs; goal under {GOAL:.0f} s: {'met' if worst < GOAL else 'NOT met'}")
    finally:
        with server.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def main() -> None:
    from webapp.core.forecast import forecast_sql

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--pg", help="a PostgreSQL server URL: also time the live numbers")
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
    if args.pg:
        _live(args.pg, sql, min(args.n, 5))


if __name__ == "__main__":
    main()
