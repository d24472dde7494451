"""Benchmark: the stairway test's overhead per revision on a 300-revision chain,
against a plain ``upgrade head`` of the same chain.

Run from the project root::

    .venv/bin/python bench/stairway.py [--revisions 300] [--n 3] [--backend sqlite|mysql|postgresql]

What it does: writes a real Alembic environment of a linear chain of
``--revisions`` revisions (each creates a small table, ``tests/support/envtools.linear``)
and a targets file for it, builds the dashboard app in this process (its
catalog, runner and agent — the same code the pages and the API run), then
``--n`` times, on a fresh empty database each time:

- plain: the agent's ``command`` op, ``alembic upgrade head`` (run_command);
- stairway: the agent's ``stairway`` op on a scratch copy of the (empty)
  database: per revision upgrade, snapshot, downgrade, snapshot, upgrade,
  snapshot, compared.

Prints the medians, the stairway's time per revision and its overhead per
revision over the plain upgrade (ms), and checks every stairway passed.
Exit status 0 whatever the figures (1 when a stairway did not pass).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

SERVERS = {"mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
           "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test"}


def fresh_database(backend: str, tmp: Path, i: int) -> tuple[str, callable]:
    """(URL of a new empty database, a function that drops it)."""
    import sqlalchemy as sa

    if backend == "sqlite":
        path = tmp / f"bench-{i}.db"
        path.touch()
        return f"sqlite:///{path}", lambda: path.unlink(missing_ok=True)
    server = sa.engine.make_url(SERVERS[backend])
    name = f"bench_stairway_{int(time.time())}_{i}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    quote = "`" if backend == "mysql" else '"'
    with admin.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE {quote}{name}{quote}"))

    def drop():
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False), drop


def run(tmp: Path, args) -> int:
    import os

    from benchlib import make_app
    from support.envtools import linear, make_env, write_targets_file

    from webapp.core.runner import run_agent, run_command

    ini = make_env(tmp / "env", linear(args.revisions))
    targets = write_targets_file(tmp / "targets.toml", {"bench": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "BENCH_URL"}})
    app = make_app(targets, f"sqlite:///{tmp / 'dashboard.db'}")
    target = app.extensions["alembic_dashboard"].get("bench")
    plain, stairway, failed = [], [], 0
    for i in range(args.n):
        url, drop = fresh_database(args.backend, tmp, i)
        os.environ["BENCH_URL"] = url
        try:
            began = time.perf_counter()
            data = run_agent(target, {"op": "stairway", "command": "upgrade",
                                      "revision": "heads"}, url=url, timeout=3600).data
            stairway.append(time.perf_counter() - began)
            if not data["passed"] or len(data["revisions"]) != args.revisions:
                failed += 1
                print(f"stairway run {i} did not pass: {data.get('error')}")
            began = time.perf_counter()
            run_command(target, "upgrade", "head", url=url, timeout=3600)
            plain.append(time.perf_counter() - began)
        finally:
            drop()
        print(f"run {i}: plain {plain[-1]:.2f} s, stairway {stairway[-1]:.2f} s", flush=True)
    p, s = statistics.median(plain), statistics.median(stairway)
    n = args.revisions
    print(f"\n{args.backend}, {n} revisions, median of {args.n}:")
    print(f"  plain upgrade head     {p:8.2f} s  ({p / n * 1000:7.1f} ms per revision)")
    print(f"  stairway (up/down/up)  {s:8.2f} s  ({s / n * 1000:7.1f} ms per revision)")
    overhead = (s - p) / n * 1000
    print(f"  overhead per revision  {overhead:7.1f} ms  ({s / p:.1f}x the plain upgrade)")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revisions", type=int, default=300)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--backend", choices=["sqlite", "mysql", "postgresql"],
                        default="sqlite")
    args = parser.parse_args()
    from benchlib import in_scratch_folder

    return in_scratch_folder("bench-stairway-", lambda tmp: run(tmp, args))


if __name__ == "__main__":
    raise SystemExit(main())
