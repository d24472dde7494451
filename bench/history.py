"""Benchmark: the history page of a 1,000-revision target vs ``alembic history``.

Run from the project root::

    .venv/bin/python bench/history.py [--n 50] [--cli-n 5] [--no-gunicorn] [--keep]

What it does:

1. Writes (in a temporary directory) a real Alembic environment of exactly
   1,000 revisions: a main line with a branch point every 50 main revisions
   whose side branch (5-10 revisions) is merged back by a merge revision, plus
   a labelled second base branch (``extra``) on which one main revision
   ``depends_on``. Upgrades are ``pass``. A SQLite database is upgraded with
   ``alembic.command.upgrade`` to the main-line revision nearest to the 900th
   revision and to the middle of ``extra``: two current revisions, ~100 pending.
2. Serves it with ``webapp.create_app`` (temporary dashboard DB migrated with
   ``upgrade_dashboard_db``, one admin logged in through the real /login form
   with its CSRF token) and times ``GET /targets/bench/history`` in-process
   with the Flask test client (== server time): the cold first request, then
   ``--n`` warm requests (median, p90). Optionally the same through a real
   gunicorn (1 worker) with ``http.client`` (client-side wall time).
3. Times ``.venv/bin/alembic -c <ini> history --indicate-current`` on the
   same environment and database (``--cli-n`` runs, median).
4. Prints a table and PASS/FAIL for the goals: warm page >= 25x faster than
   the CLI, and warm median server time < 30 ms. Then a breakdown of where the
   warm (and cold) request time goes: direct timings of each step and a
   cProfile summary.

The page is checked (status 200, exactly 1,000 ``data-revision=`` rows, state
counts) before anything is timed, so an error page cannot be benchmarked.
Exit status is 0 whatever the figures (1 only if the page itself is wrong).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import http.client
import io
import os
import pstats
import re
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import (  # noqa: E402
    PASSWORD,
    csrf_from,
    in_scratch_folder,
    logged_in_client,
    make_app,
    ms,
    percentile,
)
from support.envtools import Rev, make_env, write_targets_file  # noqa: E402

TOTAL = 1000
EXTRA_LEN = 40  # revisions on the labelled second base branch
BRANCH_EVERY = 50  # main-line revisions between branch points
PARALLEL_MAIN = 3  # main-line revisions between a branch point and its merge
CURRENT_AT = 900  # the database is upgraded to the main-line revision nearest this index
EXTRA_CURRENT_AT = 25  # ... and to this revision of the extra branch
DEPENDS_AT = 300  # this main-line revision depends_on extra[10]
URL_ENV = "BENCH_HISTORY_DB_URL"
PAGE = "/targets/bench/history"
GOAL_RATIO = 25.0
GOAL_MS = 30.0


# --------------------------------------------------------------------------- environment

class Graph:
    """The generated revisions, plus what is needed to check the page."""

    def __init__(self) -> None:
        self.revs: list[Rev] = []
        self.by_id: dict[str, Rev] = {}
        self.main_line: list[str] = []  # main-line revisions (incl. merges), in order
        self.extra: list[str] = []
        self.branch_points = 0
        self.merges = 0

    def add(self, kind: str, down, **kw) -> str:
        seq = len(self.revs)
        rid = hashlib.sha1(f"bench-{seq}".encode()).hexdigest()[:12]
        created = dt.datetime(2024, 1, 1) + dt.timedelta(hours=seq)
        rev = Rev(rid, down, message=f"{kind} {seq}: change number {seq}",
                  upgrade="pass", downgrade="pass",
                  create_date=created.strftime("%Y-%m-%d %H:%M:%S.000000"), **kw)
        self.revs.append(rev)
        self.by_id[rid] = rev
        return rid

    def ancestors(self, revisions) -> set[str]:
        """``revisions`` and everything they need (down revisions and depends_on)."""
        seen: set[str] = set()
        stack = list(revisions)
        while stack:
            rid = stack.pop()
            if rid in seen:
                continue
            seen.add(rid)
            rev = self.by_id[rid]
            for field_ in (rev.down, rev.depends_on):
                if isinstance(field_, str):
                    stack.append(field_)
                elif field_:
                    stack.extend(field_)
        return seen


def build_graph() -> Graph:
    """Exactly TOTAL revisions: main line with side branches + labelled 'extra' base."""
    g = Graph()
    # The labelled second base first (older create dates).
    prev = None
    for i in range(EXTRA_LEN):
        prev = g.add("extra", prev, branch_labels=("extra",) if i == 0 else None)
        g.extra.append(prev)
    main_budget = TOTAL - EXTRA_LEN
    prev = None
    since_branch = 0
    block = 0
    while len(g.revs) < TOTAL:
        left = TOTAL - len(g.revs)
        side_len = 5 + block % 6  # 5..10
        need = 1 + side_len + PARALLEL_MAIN + 1  # branch point, side, parallel main, merge
        if since_branch >= BRANCH_EVERY and prev is not None and left > need + 5:
            # prev is the branch point: a side branch and the main line both start here.
            g.branch_points += 1
            side = prev
            for _ in range(side_len):
                side = g.add("side", side)
            main = prev
            for _ in range(PARALLEL_MAIN):
                main = g.add("main", main)
                g.main_line.append(main)
            prev = g.add("merge", (main, side))
            g.main_line.append(prev)
            g.merges += 1
            since_branch = 0
            block += 1
            continue
        kw = {}
        if len(g.main_line) == DEPENDS_AT:
            kw["depends_on"] = g.extra[10]
        prev = g.add("main", prev, **kw)
        g.main_line.append(prev)
        since_branch += 1
    assert len(g.revs) == TOTAL, len(g.revs)
    assert main_budget > 0
    return g


def write_environment(root: Path, graph: Graph, db_url: str) -> Path:
    ini = make_env(root / "env", graph.revs)
    text = ini.read_text()
    ini.write_text(text.replace("sqlalchemy.url = sqlite:///unused.db",
                                f"sqlalchemy.url = {db_url}"))
    return ini


def upgrade_target(ini: Path, graph: Graph) -> tuple[str, ...]:
    """Upgrade the SQLite database part-way with alembic's Python API."""
    from alembic import command
    from alembic.config import Config

    index_of = {r.revision: i for i, r in enumerate(graph.revs)}
    main_target = min(graph.main_line, key=lambda r: abs(index_of[r] - CURRENT_AT))
    extra_target = graph.extra[EXTRA_CURRENT_AT]
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    command.upgrade(config, main_target)
    command.upgrade(config, extra_target)
    return main_target, extra_target


# --------------------------------------------------------------------------- dashboard

def check_page(status: int, html: str, graph: Graph, current: tuple[str, ...]) -> list[str]:
    """Abort if the page is an error page; return warnings about its content."""
    rows = html.count("data-revision=")
    if status != 200 or rows != TOTAL:
        sys.stderr.write(html[:2000] + "\n")
        raise SystemExit(f"history page is wrong: HTTP {status}, {rows} data-revision rows "
                         f"(expected 200 and {TOTAL}); not benchmarking an error page")
    applied = graph.ancestors(current)
    expected = {"current": len(current), "applied": len(applied) - len(current),
                "pending": TOTAL - len(applied)}
    found = {state: len(re.findall(rf'<tr id="rev-[^"]+" class="{state}"', html))
             for state in expected}
    warnings = []
    if found != expected:
        warnings.append(f"row states on the page {found} != expected {expected}")
    return warnings


def time_requests(client, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(PAGE)
        response.get_data()
        times.append(time.perf_counter() - t0)
        if response.status_code != 200:
            raise SystemExit(f"warm request failed: HTTP {response.status_code}")
    return times


# --------------------------------------------------------------------------- CLI

def time_cli(ini: Path, n: int) -> tuple[list[float], str]:
    alembic = ROOT / ".venv" / "bin" / "alembic"
    if not alembic.exists():
        alembic = Path(sys.executable).parent / "alembic"
    cmd = [str(alembic), "-c", str(ini), "history", "--indicate-current"]
    times, out = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ini.parent, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"alembic history failed:\n{proc.stderr[-2000:]}")
        out = proc.stdout
    return times, out


# --------------------------------------------------------------------------- gunicorn

class HttpSession:
    """Minimal cookie-keeping http.client session (one keep-alive connection)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None):
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return response.status, data


def gunicorn_times(tmp: Path, targets_file: Path, dashboard_url: str, db_url: str,
                   n: int) -> tuple[float, list[float], list[float]] | str:
    """Through a real 1-worker gunicorn: (cold client time, warm client times, gunicorn's
    own request times of the warm requests from its access log), or why it was skipped."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(tmp / "instance"),
           "DASHBOARD_SECRET_KEY": "bench-gunicorn-secret", "DASHBOARD_DATABASE_URL":
           dashboard_url, "DASHBOARD_TARGETS": str(targets_file), URL_ENV: db_url,
           "PORT": str(port), "WEB_CONCURRENCY": "1",
           # %(D)s = request time in microseconds, as measured by gunicorn itself
           "GUNICORN_CMD_ARGS": "--access-logformat 'BENCH %(D)s %(s)s %(U)s'"}
    env.pop("DASHBOARD_ENV", None)
    log_path = tmp / "gunicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        return "gunicorn did not start: " + log_path.read_text()[-500:]
                    time.sleep(0.1)
            session = HttpSession(port)
            _, body = session.request("GET", "/login")
            token = csrf_from(body.decode())
            form = urllib.parse.urlencode({"username": "bench", "password": PASSWORD,
                                           "csrf_token": token})
            status, _ = session.request("POST", "/login", form)
            if status != 302:
                return f"gunicorn login failed: HTTP {status}"
            t0 = time.perf_counter()
            status, body = session.request("GET", PAGE)
            cold = time.perf_counter() - t0
            rows = body.count(b"data-revision=")
            if status != 200 or rows != TOTAL:
                return f"gunicorn page wrong: HTTP {status}, {rows} rows"
            for _ in range(3):
                session.request("GET", PAGE)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                status, _ = session.request("GET", PAGE)
                times.append(time.perf_counter() - t0)
            session.conn.close()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    logged = [int(m.group(1)) / 1e6 for m in re.finditer(
        rf"^BENCH (\d+) 200 {re.escape(PAGE)}$", log_path.read_text(), re.MULTILINE)]
    return cold, times, logged[-n:] if len(logged) >= n else []


# --------------------------------------------------------------------------- breakdown

def direct_breakdown(app, n: int = 30) -> list[tuple[str, float]]:
    """Median ms of each step the warm history request performs, called directly."""
    from webapp.core.history import _REVISION_FILE_RE, fingerprint, script_directory_paths
    from webapp.core.status import current_heads
    from webapp.services.catalog import get_catalog
    from webapp.views.targets import history_rows

    results = []

    def measure(label: str, fn, repeat: int = n):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        results.append((label, ms(statistics.median(times))))

    with app.test_request_context(PAGE):
        catalog = get_catalog()
        target = catalog.get("bench")
        location, locations, recursive = script_directory_paths(target)
        engine = catalog.engines.get(target.database_url())
        status = catalog.status(target)
        history = status.history
        measure("catalog.status(target) total", lambda: catalog.status(target))
        measure("  HistoryCache.get (ini + fingerprint, cache hit)",
                lambda: catalog.histories.get(target))
        measure("    script_directory_paths (read alembic.ini)",
                lambda: script_directory_paths(target))
        measure("    fingerprint (list + stat 1000 files)",
                lambda: fingerprint(locations, recursive))
        files = [Path(p) for p, _size, _mtime in history.fingerprint]
        folder = files[0].parent
        measure("      of which: os.walk + name regex (1 dir, 1000 names)",
                lambda: [n for _r, _d, names in os.walk(folder) for n in sorted(names)
                         if _REVISION_FILE_RE.match(n)])
        measure("      of which: Path.resolve() x1000 (realpath: lstat per component)",
                lambda: [f.resolve() for f in files])
        measure("      of which: Path.stat() x1000", lambda: [f.stat() for f in files])
        measure("  current_heads (SQLite version table read)",
                lambda: current_heads(engine, target.version_table))
        measure("  History.pending(current) (RevisionMap.iterate_revisions)",
                lambda: history.pending(status.current))
        measure("history_rows (layout + 1000 SVGs; cache miss only)",
                lambda: history_rows(history, status), repeat=5)
        measure("History.applied(current) (inside history_rows)",
                lambda: history.applied(status.current), repeat=5)
    return results


def tracked_functions() -> list[tuple[str, object]]:
    """``(label, function)`` pairs whose time the profile of a warm request
    reports; the functions are the dashboard's own, imported here (an
    AttributeError names one that was renamed)."""
    from flask import templating
    from flask_login import login_manager

    from webapp.core import history as core_history
    from webapp.core import status as core_status
    from webapp.services import catalog as svc_catalog
    from webapp.views import targets as views_targets

    return [
        ("view targets.history", views_targets.history),
        ("catalog.status -> target_status", core_status.target_status),
        ("  HistoryCache.get", core_history.HistoryCache.get),
        ("    script_directory_paths", core_history.script_directory_paths),
        ("    fingerprint", core_history.fingerprint),
        ("    build_history (cold only)", core_history.build_history),
        ("  current_heads (DB)", core_status.current_heads),
        ("  History.pending", core_history.History.pending),
        ("fragments.get_or_compute", svc_catalog.Memo.get_or_compute),
        ("  history_rows (cold only)", views_targets.history_rows),
        ("flask.render_template (all)", templating.render_template),
        ("flask_login _load_user", login_manager.LoginManager._load_user),
    ]


def profile_requests(client, n: int, label: str) -> str:
    """cProfile ``n`` requests; return a per-request summary of key functions + top list."""
    tracked = tracked_functions()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(n):
        client.get(PAGE).get_data()
    profiler.disable()
    wall = ms(time.perf_counter() - t0) / n
    stats = pstats.Stats(profiler)
    raw = stats.stats  # type: ignore[attr-defined]
    lines = [f"{label}: {n} request(s) under cProfile, {wall:.1f} ms/request wall "
             "(profiler overhead included)"]
    for name, fn in tracked:
        code = fn.__code__
        key = (code.co_filename, code.co_firstlineno, code.co_name)
        if key in raw:
            _cc, calls, _tt, cum, _callers = raw[key]
            lines.append(f"  {name:<40} {ms(cum) / n:8.2f} ms/request  ({calls / n:g} calls)")
        else:
            lines.append(f"  {name:<40} {'-':>8}             (not called)")
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(25)
    top = "\n".join("    " + line for line in buf.getvalue().splitlines()
                    if line.strip() and not line.startswith("   Ordered"))
    lines.append("  top 25 by cumulative time (totals over all profiled requests):")
    lines.append(top)
    return "\n".join(lines)


# --------------------------------------------------------------------------- main

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="warm page requests (default 50)")
    parser.add_argument("--cli-n", type=int, default=5, help="CLI runs (default 5)")
    parser.add_argument("--no-gunicorn", action="store_true", help="skip the gunicorn run")
    parser.add_argument("--no-profile", action="store_true", help="skip the breakdown")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    return in_scratch_folder("bench-history-", lambda tmp: run(tmp, args), keep=args.keep)


def run(tmp: Path, args) -> int:
    db_url = f"sqlite:///{tmp / 'target.db'}"
    dashboard_url = f"sqlite:///{tmp / 'dashboard.db'}"
    os.environ[URL_ENV] = db_url

    t0 = time.perf_counter()
    graph = build_graph()
    ini = write_environment(tmp, graph, db_url)
    current = upgrade_target(ini, graph)
    applied = graph.ancestors(current)
    print(f"environment: {TOTAL} revisions ({len(graph.main_line)} main line, "
          f"{graph.branch_points} branch points / {graph.merges} merges, "
          f"{len(graph.extra)} on labelled base 'extra'), written to {ini.parent}")
    print(f"database upgraded to {current[0]} (main) + {current[1]} (extra): "
          f"{len(applied)} applied, {TOTAL - len(applied)} pending "
          f"[setup {time.perf_counter() - t0:.1f} s]")

    targets_file = write_targets_file(tmp / "targets.toml", {"bench": {
        "label": "Benchmark (1,000 revisions)", "tier": "development",
        "alembic_ini": str(ini), "url_env": URL_ENV}})
    app = make_app(targets_file, dashboard_url)
    client = logged_in_client(app)

    t0 = time.perf_counter()
    response = client.get(PAGE)
    html = response.get_data(as_text=True)
    cold = time.perf_counter() - t0
    warnings = check_page(response.status_code, html, graph, current)
    print(f"page OK: HTTP 200, {html.count('data-revision=')} rows, "
          f"{len(html.encode()) / 1024:.0f} KiB")
    for warning in warnings:
        print(f"WARNING: {warning}")

    time_requests(client, 5)  # warm-up
    warm = time_requests(client, args.n)
    warm_med, warm_p90 = ms(statistics.median(warm)), ms(percentile(warm, 0.9))

    gunicorn = None if args.no_gunicorn else gunicorn_times(
        tmp, targets_file, dashboard_url, db_url, args.n)

    cli_times, cli_out = time_cli(ini, args.cli_n)
    cli_med = ms(statistics.median(cli_times))
    cli_lines = [line for line in cli_out.splitlines() if "->" in line]
    if len(cli_lines) != TOTAL or "(current)" not in cli_out:
        print(f"WARNING: CLI printed {len(cli_lines)} revision lines "
              f"(expected {TOTAL}); '(current)' present: {'(current)' in cli_out}")

    ratio = cli_med / warm_med
    print()
    print("=" * 66)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"GET {PAGE}   ({TOTAL} revisions, Python {sys.version.split()[0]})")
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews figures)")
    print("-" * 66)
    print(f"{'cold page (first request, in-process)':<44} {ms(cold):>10.1f} ms")
    print(f"{f'warm page median (n={args.n}, in-process)':<44} {warm_med:>10.2f} ms")
    print(f"{'warm page p90':<44} {warm_p90:>10.2f} ms")
    print(f"{'warm page min / max':<44} {ms(min(warm)):>6.2f} / {ms(max(warm)):.2f} ms")
    if isinstance(gunicorn, tuple):
        g_cold, g_warm, g_server = gunicorn
        print(f"{'gunicorn cold (client wall time)':<44} {ms(g_cold):>10.1f} ms")
        print(f"{'gunicorn warm median / p90 (client wall)':<44} "
              f"{ms(statistics.median(g_warm)):>6.2f} / {ms(percentile(g_warm, 0.9)):.2f} ms")
        if g_server:
            print(f"{'gunicorn warm median / p90 (access log %(D)s)':<44} "
                  f"{ms(statistics.median(g_server)):>6.2f} / "
                  f"{ms(percentile(g_server, 0.9)):.2f} ms")
    elif gunicorn is not None:
        print(f"gunicorn: skipped ({gunicorn})")
    print(f"{f'alembic history --indicate-current (n={args.cli_n})':<44} {cli_med:>10.1f} ms"
          f"   (min {ms(min(cli_times)):.0f}, max {ms(max(cli_times)):.0f})")
    print(f"{'ratio CLI / warm page (medians)':<44} {ratio:>10.1f} x")
    print(f"{'ratio CLI min / warm page min (less noisy)':<44} "
          f"{min(cli_times) / min(warm):>10.1f} x")
    print("-" * 66)
    goal1 = ratio >= GOAL_RATIO
    goal2 = warm_med < GOAL_MS
    print(f"goal: warm page >= {GOAL_RATIO:g}x faster than CLI   "
          f"{'PASS' if goal1 else 'FAIL'} ({ratio:.1f}x)")
    print(f"goal: warm page median < {GOAL_MS:g} ms             "
          f"{'PASS' if goal2 else 'FAIL'} ({warm_med:.2f} ms)")
    print("=" * 66)

    if not args.no_profile:
        print("\nBreakdown of the warm request (direct calls, median ms, no profiler):")
        for label, value in direct_breakdown(app):
            print(f"  {label:<68} {value:8.2f} ms")
        print()
        print(profile_requests(client, 20, "warm"))
        # A fresh app has empty caches: profile its cold first request too.
        cold_app = make_app(targets_file, dashboard_url)
        cold_client = logged_in_client(cold_app)
        print()
        print(profile_requests(cold_client, 1, "cold"))
        cold_app.extensions["alembic_dashboard"].engines.dispose()
    app.extensions["alembic_dashboard"].engines.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
