"""Benchmark: the job page's poll on a job with a long log.

The page polls ``GET /jobs/<id>/status?offset=N`` every second while a job
runs and is sent only the output after ``N``; the server reads the job's
whole log to cut it. This script stores a job with a log of ``--mb`` MiB in
a temporary SQLite dashboard database (or ``--dashboard-url``), then times,
in-process through the test client:

- the poll when nothing is new (the usual second);
- the poll with 1 KiB of new output;
- the whole job page (``GET /jobs/<id>``), which renders the whole log.

Prints medians over ``--n`` requests. Run: ``.venv/bin/python bench/job_poll.py``.
(Cutting the log in SQL instead, ``substr()`` with ``char_length()``, was
measured and is not faster on any of the three databases: they read the
whole value to count characters.)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import in_scratch_folder, logged_in_client, make_app, ms  # noqa: E402

HX = {"HX-Request": "true"}


def timed(client, url: str, n: int, headers: dict | None = None) -> list[float]:
    """Wall times (seconds) of ``n`` GETs of ``url``; exits on a bad status."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(url, headers=headers or {})
        times.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: HTTP {response.status_code}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=5.0, help="log size in MiB (default 5)")
    parser.add_argument("--n", type=int, default=30, help="requests per figure (default 30)")
    parser.add_argument("--dashboard-url", help="dashboard database (default: temporary SQLite)")
    args = parser.parse_args()
    return in_scratch_folder("bench-job-poll-", lambda tmp: run(tmp, args))


def run(tmp: Path, args) -> int:
    from alembic import command
    from alembic.config import Config

    from webapp.extensions import db
    from webapp.models import Job, JobStatus, utcnow
    from webapp.services.liveness import process_start_token

    ini = tmp / "env" / "alembic.ini"
    command.init(Config(str(ini)), str(tmp / "env" / "migrations"))
    os.environ["BENCH_POLL_URL"] = f"sqlite:///{tmp / 'target.db'}"
    targets = tmp / "targets.toml"
    targets.write_text(f'[targets.bench]\ntier = "development"\nalembic_ini = "{ini}"\n'
                       'url_env = "BENCH_POLL_URL"\n', encoding="utf-8")
    dashboard_url = args.dashboard_url or f"sqlite:///{tmp / 'dashboard.db'}"
    app = make_app(targets, dashboard_url)
    client = logged_in_client(app)
    line = "INFO  [alembic.runtime.migration] Running upgrade 1a2b3c -> 4d5e6f, rows é ✓\n"
    log = line * int(args.mb * 1024 * 1024 / len(line.encode()))
    with app.app_context():  # a running job of this process, so it is not reaped
        job = Job(target="bench", command="upgrade", revision="heads", plan_hash="x",
                  status=JobStatus.RUNNING, started_at=utcnow(), log=log,
                  worker_pid=os.getpid(), worker_host=socket.gethostname()[:255],
                  worker_start=process_start_token(os.getpid()))
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    url = f"/jobs/{job_id}/status?offset={len(log)}"
    timed(client, url, 3, HX)  # warm-up
    nothing_new = timed(client, url, args.n, HX)
    with app.app_context():
        db.session.execute(db.update(Job).where(Job.id == job_id).values(
            log=log + "x" * 1024))
        db.session.commit()
    some_new = timed(client, url, args.n, HX)
    whole_page = timed(client, f"/jobs/{job_id}", max(args.n // 3, 3))
    size = len(log.encode()) / 1024 / 1024
    print("=" * 66)
    print(f"job poll, log of {size:.1f} MiB ({log.count(chr(10)):,} lines), "
          f"{app.config['SQLALCHEMY_DATABASE_URI'].split(':')[0]}"
          f", medians")
    print(f"machine: {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("-" * 66)
    print(f"{'poll, nothing new':<44} {ms(statistics.median(nothing_new)):>10.2f} ms")
    print(f"{'poll, 1 KiB new':<44} {ms(statistics.median(some_new)):>10.2f} ms")
    print(f"{'whole job page (renders the whole log)':<44} "
          f"{ms(statistics.median(whole_page)):>10.2f} ms")
    print("=" * 66)
    return 0


if __name__ == "__main__":
    sys.exit(main())
