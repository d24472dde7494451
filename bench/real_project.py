"""Benchmark: a real project in its own virtualenv (shop_project + 300 revisions).

Run from the project root::

    .venv/bin/python bench/real_project.py [--n 50] [--cli-n 5] [--extra 300] [--keep]

What it does:

1. Gets the target virtualenv (``tests/targetenv.target_venv()``: alembic +
   the ``shopkit`` package, which the dashboard's own environment does not
   have), copies the plain Alembic ``shop_project`` fixture into a temporary
   directory and appends ``--extra`` (300) revisions to its versions folder: a
   linear chain after its head ``s1a000000004``, each file importing
   ``shopkit.types`` at the top like real projects do, literal identifiers,
   ``pass`` bodies. The SQLite database (URL written into the copy's
   alembic.ini) is upgraded part-way with the venv's own CLI,
   ``alembic -c <ini> upgrade <rev>``.
2. Serves it in-process: a targets file with target ``shop`` (``alembic_ini``,
   ``python`` = the venv's python, ``cwd`` = the copy, ``url_env``), the app
   from ``webapp.create_app`` with a temporary SQLite dashboard DB, one admin
   logged in through the real /login form. Times the cold first
   ``GET /targets/shop/history`` (reads every revision file from source; the
   fixture's computed ``down_revision`` is read target-side), then ``--n`` warm
   requests (median, p90), and the same for the dashboard card
   ``/targets/shop/card`` (its cold figure from a second fresh app whose first
   request is the card). The page is checked (200, one ``data-revision=``
   row per revision, the expected current/applied/pending row states) before
   anything is timed.
3. Times ``alembic history`` and ``alembic history --indicate-current`` run
   with the venv's alembic on the same project and database (``--cli-n``
   runs each, median).
4. Prints a table (and the load average). Exit status 0 whatever the figures
   (1 only if a page is wrong).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import in_scratch_folder, logged_in_client, make_app, ms, percentile  # noqa: E402
from support.envtools import write_targets_file  # noqa: E402
from support.targetenv import set_sqlalchemy_url, shop_project, target_bin, target_venv  # noqa: E402

FIXTURE_REVISIONS = ("s1a000000001", "s1a000000002", "s1a000000003", "s1a000000004")
EXTRA = 300  # revisions appended after the fixture's head
CURRENT_AT = 250  # the database is upgraded to this extra revision (1-based)
URL_ENV = "BENCH_SHOP_DB_URL"
TARGET = "shop"
PAGE = f"/targets/{TARGET}/history"
CARD = f"/targets/{TARGET}/card"

REVISION_TEMPLATE = '''\
"""{message}

Revision ID: {revision}
Revises: {down}
Create Date: {create_date}

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from shopkit.types import Money

# revision identifiers, used by Alembic.
revision: str = {revision!r}
down_revision: str | Sequence[str] | None = {down!r}
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    pass


def downgrade() -> None:
    """Downgrade schema."""
    pass
'''


# --------------------------------------------------------------------------- project

def extra_id(i: int) -> str:
    """Identifier of the i-th (1-based) appended revision: 12 characters, literal."""
    return f"s2b{i:09d}"


def add_revisions(project: Path, count: int) -> list[str]:
    """Append ``count`` revisions after the fixture's head; return all ids, oldest first."""
    versions = project / "migrations" / "versions"
    start = dt.datetime(2025, 2, 1, 9, 0, 0)
    down = FIXTURE_REVISIONS[-1]
    ids = list(FIXTURE_REVISIONS)
    for i in range(1, count + 1):
        rid = extra_id(i)
        created = start + dt.timedelta(hours=i)
        source = REVISION_TEMPLATE.format(
            message=f"change number {i}", revision=rid, down=down,
            create_date=created.strftime("%Y-%m-%d %H:%M:%S.000000"))
        (versions / f"{rid}_change_number_{i}.py").write_text(source)
        ids.append(rid)
        down = rid
    return ids


def run_alembic(ini: Path, *args: str) -> subprocess.CompletedProcess:
    """The target venv's ``alembic -c <ini> ...`` in the project folder (like a user)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME",
                                                           "VIRTUAL_ENV")}
    proc = subprocess.run([str(target_bin("alembic")), "-c", str(ini), *args],
                          cwd=ini.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"alembic {' '.join(args)} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    return proc


# --------------------------------------------------------------------------- dashboard

def check_page(status: int, html: str, ids: list[str], current: str) -> list[str]:
    """Abort if the history page is an error page; return warnings about its content."""
    rows = html.count("data-revision=")
    if status != 200 or rows != len(ids) or "current" not in html:
        sys.stderr.write(html[:3000] + "\n")
        raise SystemExit(f"history page is wrong: HTTP {status}, {rows} data-revision rows "
                         f"(expected 200 and {len(ids)}), 'current' present: "
                         f"{'current' in html}; not benchmarking an error page")
    at = ids.index(current)
    expected = {"current": 1, "applied": at, "pending": len(ids) - at - 1}
    found = {state: len(re.findall(rf'<tr id="rev-[^"]+" class="{state}"', html))
             for state in expected}
    warnings = []
    if found != expected:
        warnings.append(f"row states on the history page {found} != expected {expected}")
    if f'id="rev-{current}" class="current"' not in html:
        warnings.append(f"row {current} is not marked current")
    return warnings


def check_card(status: int, html: str, current: str) -> list[str]:
    if status != 200:
        sys.stderr.write(html[:3000] + "\n")
        raise SystemExit(f"card is wrong: HTTP {status}; not benchmarking an error page")
    warnings = []
    if current not in html:
        warnings.append(f"the card does not name the current revision {current}")
    if 'class="error' in html:
        warnings.append("the card shows an error")
    return warnings


def timed_get(client, path: str):
    t0 = time.perf_counter()
    response = client.get(path)
    html = response.get_data(as_text=True)
    return time.perf_counter() - t0, response.status_code, html


def time_requests(client, path: str, n: int) -> list[float]:
    times = []
    for _ in range(n):
        elapsed, status, _ = timed_get(client, path)
        times.append(elapsed)
        if status != 200:
            raise SystemExit(f"warm request {path} failed: HTTP {status}")
    return times


# --------------------------------------------------------------------------- CLI

def time_cli(ini: Path, n: int, *args: str) -> tuple[list[float], str]:
    times, out = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        proc = run_alembic(ini, "history", *args)
        times.append(time.perf_counter() - t0)
        out = proc.stdout
    return times, out


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="warm requests (default 50)")
    parser.add_argument("--cli-n", type=int, default=5, help="CLI runs (default 5)")
    parser.add_argument("--extra", type=int, default=EXTRA,
                        help=f"revisions appended to shop_project (default {EXTRA})")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    return in_scratch_folder("bench-real-project-", lambda tmp: run(tmp, args), keep=args.keep)


def run(tmp: Path, args) -> int:
    db_url = f"sqlite:///{tmp / 'shop.db'}"
    dashboard_url = f"sqlite:///{tmp / 'dashboard.db'}"
    os.environ[URL_ENV] = db_url

    t0 = time.perf_counter()
    python = target_venv()
    print(f"target venv: {python} [{time.perf_counter() - t0:.1f} s]")

    t0 = time.perf_counter()
    project = shop_project(tmp, db_url)
    ini = project / "alembic.ini"
    set_sqlalchemy_url(ini, db_url)  # (shop_project already did; explicit for clarity)
    ids = add_revisions(project, args.extra)
    total = len(ids)
    current = ids[min(len(FIXTURE_REVISIONS) + CURRENT_AT, total) - 1]
    run_alembic(ini, "upgrade", current)
    applied = ids.index(current) + 1
    print(f"project: {project} ({len(FIXTURE_REVISIONS)} fixture + {args.extra} generated = "
          f"{total} revisions)")
    print(f"database upgraded with the venv's alembic CLI to {current}: {applied} applied, "
          f"{total - applied} pending [setup {time.perf_counter() - t0:.1f} s]")

    targets_file = write_targets_file(tmp / "targets.toml", {TARGET: {
        "label": "Shop (real project, own venv)", "tier": "development",
        "alembic_ini": str(ini), "python": str(python), "cwd": str(project),
        "url_env": URL_ENV}})
    app = make_app(targets_file, dashboard_url)
    client = logged_in_client(app)

    cold, status, html = timed_get(client, PAGE)
    warnings = check_page(status, html, ids, current)
    print(f"history page OK: HTTP 200, {html.count('data-revision=')} rows, "
          f"{len(html.encode()) / 1024:.0f} KiB")
    card_after_page, status, card_html = timed_get(client, CARD)
    warnings += check_card(status, card_html, current)
    for warning in warnings:
        print(f"WARNING: {warning}")

    time_requests(client, PAGE, 5)  # warm-up
    warm = time_requests(client, PAGE, args.n)
    time_requests(client, CARD, 5)
    card_warm = time_requests(client, CARD, args.n)
    warm_med, warm_p90 = ms(statistics.median(warm)), ms(percentile(warm, 0.9))
    card_med, card_p90 = ms(statistics.median(card_warm)), ms(percentile(card_warm, 0.9))

    # A second fresh app (empty in-process caches) in the same process: its first request
    # is the card (a truly cold card: it builds the history), then the page (whose
    # history is then cached: table rendering only).
    app2 = make_app(targets_file, dashboard_url)
    client2 = logged_in_client(app2)
    card_cold, status, card_html = timed_get(client2, CARD)
    check_card(status, card_html, current)
    page_after_card, status, html2 = timed_get(client2, PAGE)
    check_page(status, html2, ids, current)

    cli_times, cli_out = time_cli(ini, args.cli_n)
    cur_times, cur_out = time_cli(ini, args.cli_n, "--indicate-current")
    cli_med, cur_med = ms(statistics.median(cli_times)), ms(statistics.median(cur_times))
    for label, out in (("history", cli_out), ("history --indicate-current", cur_out)):
        lines = [line for line in out.splitlines() if "->" in line]
        if len(lines) != total:
            print(f"WARNING: alembic {label} printed {len(lines)} revision lines "
                  f"(expected {total})")
    if "(current)" not in cur_out:
        print("WARNING: alembic history --indicate-current shows no (current)")

    width = 72
    print()
    print("=" * width)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"shop_project + {args.extra} revisions = {total} revision files, "
          f"Python {sys.version.split()[0]}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews figures)")
    print("-" * width)

    def line(label: str, value: str) -> None:
        print(f"{label:<50} {value:>20}")

    line(f"cold history page (first GET {PAGE})", f"{ms(cold):.1f} ms")
    line("first history page when the card built the history", f"{ms(page_after_card):.1f} ms")
    line(f"warm history page median (n={args.n})", f"{warm_med:.2f} ms")
    line("warm history page p90", f"{warm_p90:.2f} ms")
    line("warm history page min / max", f"{ms(min(warm)):.2f} / {ms(max(warm)):.2f} ms")
    line("cold card (first request of a fresh app)", f"{ms(card_cold):.1f} ms")
    line("first card after the history page (history cached)",
         f"{ms(card_after_page):.1f} ms")
    line(f"warm card median (n={args.n})", f"{card_med:.2f} ms")
    line("warm card p90", f"{card_p90:.2f} ms")
    line(f"alembic history median (n={args.cli_n})",
         f"{cli_med:.1f} ms")
    line(f"alembic history --indicate-current median (n={args.cli_n})",
         f"{cur_med:.1f} ms")
    line("ratio alembic history / warm page (medians)", f"{cli_med / warm_med:.1f} x")
    line("ratio --indicate-current / warm page (medians)", f"{cur_med / warm_med:.1f} x")
    line("ratio --indicate-current / warm card (medians)", f"{cur_med / card_med:.1f} x")
    line("ratio --indicate-current / cold page", f"{cur_med / ms(cold):.1f} x")
    print("=" * width)

    for a in (app, app2):
        a.extensions["alembic_dashboard"].engines.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
