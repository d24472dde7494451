"""Benchmark: ``upgrade head`` of 300 revisions through the dashboard vs ``alembic``.

Run from the project root::

    .venv/bin/python bench/upgrade.py [--n 5] [--backends sqlite,mysql] [--modes local,celery]
                                      [--no-breakdown]
                                      [--profile] [--keep]

What it does:

1. Writes (in a temporary directory) a real Alembic environment of a linear
   chain of 300 revisions (``tests/envtools.linear``); each revision creates a
   small table (``t_rNNN``: id + name), so every step is real DDL.
2. For each backend -- SQLite (a new file per run) and MariaDB (a new,
   uniquely named database per run, created on ``mysql+pymysql://root@
   127.0.0.1:3306/test`` and dropped afterwards; override with
   ``BENCH_MYSQL_URL``) -- starts one real gunicorn (``flask --app wsgi init``,
   ``flask --app wsgi create-token admin``, then ``gunicorn -c gunicorn.conf.py
   wsgi:app``) serving a targets file with targets ``bench-0`` (warm-up) and
   ``bench-1``..``bench-N``, whose ``url_env`` variables (``BENCH_URL_i``, set
   in gunicorn's environment) each name their own fresh database. Then, after
   one untimed warm-up of each, ``--n`` interleaved pairs of runs
   (CLI, dashboard, CLI, dashboard, ...):

   a. CLI: ``.venv/bin/alembic -c <copy of alembic.ini with the run's URL>
      upgrade head`` -- wall time of ``subprocess.run``.
   b. Dashboard: ``POST /api/v1/targets/bench-i/jobs {"command": "upgrade",
      "revision": "head"}`` with a bearer token, then ``GET /api/v1/jobs/<id>``
      every 50 ms. Measured: end-to-end (POST sent -> job seen finished),
      job only (POST answered -> job seen finished) and the POST
      latency (plan computation + job insert + worker launch).

   After every run the database's version table must be exactly the last
   revision and all 300 tables must exist (correctness guard); a dashboard
   job must end "succeeded".
   Each backend runs in each ``--modes``: ``local`` (every job is a new
   local process, ``webapp/worker.py``, which starts the target's agent) and
   ``celery`` (``DASHBOARD_BROKER_URL`` set: jobs go through Redis at
   ``BENCH_BROKER_URL``, default ``redis://127.0.0.1:6379/0``, to one warm
   ``celery -A webapp.tasks worker`` on a queue of its own, which saves the
   job process's Python start-up and imports).
3. Prints a table per backend and mode: medians, ratios vs the CLI and PASS/FAIL for
   the goal "within 1.10x of the CLI", on the job-only figure and on the
   end-to-end figure; and the machine's load average.
4. Unless ``--no-breakdown``: where the dashboard's extra time goes -- the
   job's phases from the dashboard database's own (microsecond) timestamps,
   and direct timings of the pieces (interpreter start, imports, create_app,
   the helper's plan and run operations on fresh databases, ``alembic upgrade
   head --sql``). ``--profile`` adds cProfile summaries of the helper's plan
   and run operations and of the job process (``python -m webapp.worker``).

Exit status: 0 whatever the figures; 1 only if a run was wrong (failed job,
wrong version table), so wrong runs are never reported as timings.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import os
import pstats
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sqlalchemy as sa  # noqa: E402
from support.envtools import linear, make_env, write_targets_file  # noqa: E402

REVISIONS = 300
MYSQL_SERVER = os.environ.get("BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
PG_SERVER = os.environ.get("BENCH_PG_URL",
                           "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PASSWORD = "violet horse battery staple"  # passes the password policy (no username in it)
POLL = 0.05  # seconds between GET /api/v1/jobs/<id> (--poll)
POST_GOAL = 0.050  # seconds: the POST of a job answers within this (issue 12)
GOAL = 1.10  # the dashboard must be within this factor of the CLI
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
JOB_TIMEOUT = 600.0
TERMINAL = ("succeeded", "failed", "abandoned")
ALEMBIC = ROOT / ".venv" / "bin" / "alembic"
PYTHON = ROOT / ".venv" / "bin" / "python"


class RunError(Exception):
    """A run did the wrong thing: its figures must not be reported."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(value: float | None, width: int = 8) -> str:
    return f"{value:{width}.3f}" if value is not None else f"{'-':>{width}}"


# --------------------------------------------------------------------------- backends

class Backend:
    """Hands out fresh, empty target databases and removes them afterwards."""

    name = ""
    label = ""

    def new_url(self, label: str) -> str:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class SQLiteBackend(Backend):
    name, label = "sqlite", "SQLite"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def new_url(self, label: str) -> str:
        path = self.folder / f"{label}-{secrets.token_hex(3)}.db"
        # An empty file is an empty SQLite database. The dashboard refuses a target
        # whose file does not exist yet (503 "database file does not exist", from
        # start_job's recheck), although the CLI creates it: create it for both.
        path.touch()
        return f"sqlite:///{path}"


class MariaDBBackend(Backend):
    name, label = "mysql", "MariaDB"
    quote = "`"  # identifier quote of the dialect
    drop_suffix = ""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT",
                                       connect_args={"connect_timeout": 3})
        self.prefix = "bench_up_" + secrets.token_hex(3)
        self.created: list[str] = []
        with self.engine.connect() as conn:  # fails early when the server is down
            conn.execute(sa.text("SELECT 1"))

    def new_url(self, label: str) -> str:
        name = f"{self.prefix}_{label.replace('-', '_')}"
        with self.engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {self.quote}{name}{self.quote}"))
        self.created.append(name)
        return sa.engine.make_url(self.server_url).set(database=name).render_as_string(
            hide_password=False)

    def cleanup(self) -> None:
        with self.engine.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.quote}{name}{self.quote}"
                                     f"{self.drop_suffix}"))
        self.created.clear()
        self.engine.dispose()


class PostgreSQLBackend(MariaDBBackend):
    name, label = "postgresql", "PostgreSQL"
    quote = '"'
    drop_suffix = " WITH (FORCE)"


def check_database(url: str) -> None:
    """Correctness guard: version table == last revision, all tables created."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            versions = [row[0] for row in conn.execute(
                sa.text("SELECT version_num FROM alembic_version"))]
            tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("t_r")]
    finally:
        engine.dispose()
    head = f"r{REVISIONS - 1:03d}"
    if versions != [head] or len(tables) != REVISIONS:
        raise RunError(f"database {sa.engine.make_url(url).database}: version table "
                       f"{versions} (expected ['{head}']), {len(tables)} t_r* tables "
                       f"(expected {REVISIONS})")


# --------------------------------------------------------------------------- CLI

def cli_ini(env_dir: Path, label: str, url: str) -> Path:
    """A copy of the environment's alembic.ini (same folder, so %(here)s holds)
    whose sqlalchemy.url is ``url``."""
    text = (env_dir / "alembic.ini").read_text()
    ini = env_dir / f"cli-{label}.ini"
    ini.write_text(text.replace("sqlalchemy.url = sqlite:///unused.db",
                                f"sqlalchemy.url = {url.replace('%', '%%')}"))
    return ini


def time_cli(ini: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([str(ALEMBIC), "-c", str(ini), "upgrade", "head", *extra],
                          cwd=ini.parent, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RunError(f"alembic upgrade head failed:\n{proc.stderr[-2000:]}")
    return elapsed


# --------------------------------------------------------------------------- dashboard

class Api:
    """Keep-alive JSON client with a bearer token (reconnects when needed)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.token}"}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if method != "GET" and self.conn is not None:
            # a POST is never retried, so never send it on an idle keep-alive
            # connection the server may have closed (gunicorn keepalive = 2 s)
            self.conn.close()
            self.conn = None
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt or method != "GET":
                    raise
        try:
            return response.status, json.loads(raw or b"{}")
        except ValueError:
            return response.status, {"raw": raw[:500].decode("utf-8", "replace")}

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    env: dict
    instance: Path
    log_path: Path
    api: Api
    worker: subprocess.Popen | None = None  # the Celery worker (mode "celery")

    @property
    def dashboard_db(self) -> Path:
        return self.instance / "dashboard.db"

    def stop(self) -> None:
        self.api.close()
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, backend: Backend, ini: Path, urls: dict[str, str],
                 mode: str = "local") -> Server:
    """One gunicorn (2 workers, like `make run`) serving targets ``urls``
    (name -> URL), each through its own url_env variable. Mode "local": each
    job is a new local process; "celery": jobs go through Redis
    (``BENCH_BROKER_URL``, default redis://127.0.0.1:6379/0) to one warm
    ``celery -A webapp.tasks worker`` (prefork, concurrency 1) on a queue of
    this run's own."""
    instance = tmp / f"instance-{backend.name}-{mode}"
    instance.mkdir()
    queue = f"bench-{secrets.token_hex(4)}"
    spec, url_vars = {}, {}
    for i, (name, url) in enumerate(urls.items()):
        var = f"BENCH_URL_{i}"
        spec[name] = {"label": f"Benchmark {name} ({backend.label})", "tier": "development",
                      "alembic_ini": str(ini), "url_env": var}
        if mode == "celery":
            spec[name]["queue"] = queue
        url_vars[var] = url
    targets_file = write_targets_file(tmp / f"targets-{backend.name}-{mode}.toml", spec)
    port = free_port()
    env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(instance),
           "DASHBOARD_SECRET_KEY": "bench-upgrade-secret", "DASHBOARD_ADMIN_PASSWORD": PASSWORD,
           "DASHBOARD_TARGETS": str(targets_file), "PORT": str(port), "WEB_CONCURRENCY": "2",
           **url_vars}
    for var in ("DASHBOARD_ENV", "DASHBOARD_DATABASE_URL", "GUNICORN_CMD_ARGS",
                "DASHBOARD_BROKER_URL"):
        env.pop(var, None)
    if mode == "celery":
        env["DASHBOARD_BROKER_URL"] = BROKER_URL
    flask = [str(PYTHON), "-m", "flask", "--app", "wsgi"]
    subprocess.run([*flask, "init"], cwd=ROOT, env=env, check=True, capture_output=True)
    out = subprocess.run([*flask, "create-token", "admin", "--label", "bench"], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True).stdout
    token = [line for line in out.splitlines() if line.strip()][-1].strip()
    worker = None
    if mode == "celery":
        worker_log = tmp / f"celery-{backend.name}.log"
        with open(worker_log, "w") as log:
            worker = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "celery"), "-A", "webapp.tasks", "worker",
                 "-Q", queue, "--concurrency", "1", "--pool", "prefork", "--loglevel",
                 "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log_path = tmp / f"gunicorn-{backend.name}-{mode}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(PYTHON), "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("gunicorn did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.1)
    return Server(proc, port, env, instance, log_path, Api(port, token), worker)


def warm_server(server: Server, names: list[str]) -> None:
    """Load the catalog/history caches of both gunicorn workers (new
    connections, so requests spread over workers)."""
    for _ in range(4):
        for name in names:
            api = Api(server.port, server.api.token)
            status, _ = api.request("GET", f"/api/v1/targets/{name}/history")
            api.close()
            if status != 200:
                raise SystemExit(f"GET /api/v1/targets/{name}/history: HTTP {status}")


@dataclass
class DashRun:
    post: float  # POST latency
    e2e: float  # POST sent -> finished observed
    run: float | None  # running observed -> finished observed
    phases: dict = field(default_factory=dict)  # from the dashboard DB's timestamps
    log_lines: int = 0
    polls: list[float] = field(default_factory=list)  # GET /api/v1/jobs/<id> latencies
    job_id: int = 0


def job_timestamps(server: Server, job_id: int) -> dict[str, dt.datetime]:
    """created/started/finished of a job, microsecond precision, from the
    dashboard's SQLite database (the API rounds them to seconds)."""
    con = sqlite3.connect(f"file:{server.dashboard_db}?mode=ro", uri=True, timeout=30)
    try:
        row = con.execute("SELECT created_at, started_at, finished_at FROM jobs WHERE id = ?",
                          (job_id,)).fetchone()
    finally:
        con.close()
    return {k: dt.datetime.fromisoformat(v) for k, v in
            zip(("created", "started", "finished"), row, strict=True) if v}


def time_dashboard(server: Server, target: str, url: str, poll: float = POLL) -> DashRun:
    api = server.api
    wall0 = utcnow()
    t0 = time.perf_counter()
    status, body = api.request("POST", f"/api/v1/targets/{target}/jobs",
                               {"command": "upgrade", "revision": "head"})
    t_post = time.perf_counter()
    if status != 202:
        raise RunError(f"POST /api/v1/targets/{target}/jobs: HTTP {status} {body}")
    job_id = body["job"]
    t_running = t_done = None
    job: dict = {}
    polls = []
    while True:
        before = time.perf_counter()
        status, job = api.request("GET", f"/api/v1/jobs/{job_id}")
        now = time.perf_counter()
        polls.append(now - before)
        if status != 200:
            raise RunError(f"GET /api/v1/jobs/{job_id}: HTTP {status} {job}")
        if job["status"] == "running" and t_running is None:
            t_running = now
        if job["status"] in TERMINAL:
            t_done = now
            break
        if now - t0 > JOB_TIMEOUT:
            raise RunError(f"job {job_id} still {job['status']} after {JOB_TIMEOUT:g} s")
        time.sleep(poll)
    if job["status"] != "succeeded":
        raise RunError(f"job {job_id} on {target} ended {job['status']}: {job.get('error')}\n"
                       f"{(job.get('log') or '')[-2000:]}")
    check_database(url)
    stamps = job_timestamps(server, job_id)
    phases = {}
    if {"created", "started", "finished"} <= stamps.keys():
        def at(key: str) -> float:  # seconds after the POST was sent
            return (stamps[key] - wall0).total_seconds()
        phases = {
            "POST sent -> job row inserted (auth, history, plan)": at("created"),
            "job row inserted -> POST answered (guard, recheck, audit, launch)":
                (t_post - t0) - at("created"),
            "job row inserted -> worker marks it running (worker start-up)":
                at("started") - at("created"),
            "running -> finished (helper: start-up, lock, describe, upgrade)":
                at("finished") - at("started"),
            "finished (DB) -> finished observed by the poll": (t_done - t0) - at("finished"),
        }
    return DashRun(post=t_post - t0, e2e=t_done - t0,
                   # the job itself: from the POST's answer (job queued and launched)
                   # to seeing it done — job process start-up, lock, migration
                   run=t_done - t_post,
                   phases=phases, log_lines=(job.get("log") or "").count("\n"),
                   polls=polls, job_id=job_id)


def time_log_flush(server: Server, job_id: int, repeat: int = 7) -> tuple[float, int]:
    """Median time of the job process's log flush (UPDATE of the whole log +
    heartbeat, one transaction) on the dashboard DB, rewriting job ``job_id``'s
    own log unchanged; and the log's size in bytes."""
    engine = sa.create_engine(f"sqlite:///{server.dashboard_db}",
                              connect_args={"timeout": 30})
    try:
        with engine.connect() as conn:
            log = conn.execute(sa.text("SELECT log FROM jobs WHERE id = :i"),
                               {"i": job_id}).scalar() or ""
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE jobs SET log = :log WHERE id = :i"),
                             {"log": log, "i": job_id})
            times.append(time.perf_counter() - t0)
    finally:
        engine.dispose()
    return statistics.median(times), len(log.encode())


# --------------------------------------------------------------------------- breakdown

def time_cmd(cmd: list[str], env: dict | None = None, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RunError(f"{' '.join(cmd)} failed:\n{proc.stderr[-1500:]}")
    return statistics.median(times)


def helper_payload(ini: Path, url: str, op: str, tmp: Path) -> dict:
    """The request runner.py sends to the agent for ``op``."""
    from webapp.core.runner import with_connect_timeout

    payload = {"op": op, "alembic_ini": str(ini), "ini_section": "alembic",
               "url": with_connect_timeout(url), "version_table": "alembic_version",
               "command": "upgrade", "revision": "head"}
    if op == "run":
        payload.update(lock_name="bench-direct",
                       expect_current=[])
    return payload


def time_helper(ini: Path, url: str, op: str, tmp: Path,
                profile: Path | None = None) -> tuple[float, dict]:
    """Run the agent's ``op`` directly like runner.py does (same
    interpreter, environment and flags); return wall time and its result."""
    from webapp.agent import AGENT_DIR

    work = Path(tempfile.mkdtemp(dir=tmp, prefix=f"helper-{op}-"))
    request, result = work / "request.json", work / "result.json"
    request.write_text(json.dumps(helper_payload(ini, url, op, work)))
    cmd = [str(PYTHON)]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += [str(AGENT_DIR), str(request), str(result)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ini.parent, env=env, capture_output=True)
    elapsed = time.perf_counter() - t0
    data = json.loads(result.read_text())
    if not data.get("ok"):
        raise RunError(f"helper {op} failed: {data.get('error')}\n{proc.stdout[-1500:]}")
    return elapsed, data


def profile_summary(path: Path, label: str, limit: int = 22) -> str:
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.sort_stats("cumulative").print_stats(limit)
    lines = [line for line in buf.getvalue().splitlines()
             if line.strip() and not line.lstrip().startswith(("Ordered", "List reduced"))]
    return f"{label}\n" + "\n".join("    " + line[:150] for line in lines)


def profile_worker(tmp: Path, server: Server, target: str, url: str) -> str:
    """cProfile the job process (``python -m webapp.worker JOB_ID``) on a job
    queued directly in the dashboard database (the same row the API inserts)."""
    con = sqlite3.connect(server.dashboard_db, timeout=30)
    try:
        user_id = con.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()[0]
        now = utcnow().isoformat(sep=" ")
        cur = con.execute(
            "INSERT INTO jobs (target, command, revision, user_id, plan_hash, status, "
            "from_revisions, planned_revisions, applied_revisions, log, dialect, created_at, "
            "heartbeat_at) VALUES (?, 'upgrade', 'head', ?, 'bench', 'queued', '', '', '', '', "
            "?, ?, ?)", (target, user_id, sa.engine.make_url(url).get_backend_name(), now, now))
        job_id = cur.lastrowid
        con.commit()
    finally:
        con.close()
    prof = tmp / f"worker-{job_id}.prof"
    env = {**server.env}
    t0 = time.perf_counter()
    proc = subprocess.run([str(PYTHON), "-m", "cProfile", "-o", str(prof), "-m",
                           "webapp.worker", str(job_id)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RunError(f"worker under cProfile failed:\n{proc.stderr[-1500:]}")
    check_database(url)
    stats = pstats.Stats(str(prof))
    raw = stats.stats  # type: ignore[attr-defined]

    def cum(name: str, file_part: str) -> tuple[float, int]:
        for (filename, _line, func), (_cc, calls, _tt, ct, _callers) in raw.items():
            if func == name and file_part in filename:
                return ct, calls
        return 0.0, 0

    rows = [
        ("whole process (wall, incl. interpreter start)", elapsed, 1),
        ("create_app (webapp/__init__.py)", *cum("create_app", "webapp/__init__.py")),
        ("job_process.execute", *cum("execute", "services/job_process.py")),
        ("  _run_streaming (helper process lifetime)", *cum("_run_streaming", "jobs.py")),
        ("  flush (log UPDATE + heartbeat, beat thread)", *cum("flush", "services/jobs.py")),
        ("  _finish", *cum("_finish", "services/jobs.py")),
        ("  audit.record", *cum("record", "services/audit.py")),
    ]
    lines = [f"job process under cProfile (job {job_id}, {target}):"]
    for label, seconds, calls in rows:
        lines.append(f"  {label:<52} {seconds:8.3f} s  ({calls} calls)")
    lines.append("  (cProfile sees only the main thread: the beat thread's flushes are not "
                 "counted in its totals)")
    lines.append(profile_summary(prof, "  top by cumulative time:", 18))
    return "\n".join(lines)


def breakdown(tmp: Path, ini: Path, backend: Backend, server: Server, runs: list[DashRun],
              cli_median: float, profile: bool) -> None:
    print(f"\nWhere the dashboard's time goes ({backend.label}):")
    print("  job phases, median over the timed runs, from the dashboard DB's microsecond "
          "timestamps:")
    keys = list(runs[0].phases) if runs and runs[0].phases else []
    for key in keys:
        values = [r.phases[key] for r in runs if key in r.phases]
        print(f"    {key:<70} {fmt_s(median(values))} s")
    lines = [r.log_lines for r in runs]
    polls = [p for r in runs for p in r.polls]
    if runs:
        flush, size = time_log_flush(server, runs[-1].job_id)
        print(f"    job log: {median(lines):.0f} lines, {size // 1024} KiB; one flush (UPDATE "
              f"of the whole log + commit, every 0.5 s) takes {flush * 1000:.1f} ms")
        print(f"    GET /api/v1/jobs/<id> while polling: median {median(polls) * 1000:.1f} ms, "
              f"max {max(polls) * 1000:.1f} ms, {len(polls) / len(runs):.0f} polls per job "
              "(server CPU taken from the job on this 2-core machine)")
    py = str(PYTHON)
    env = server.env
    print("  pieces timed directly (median of 3, fresh databases):")
    rows = [
        ("python -c pass (interpreter start)", time_cmd([py, "-c", "pass"])),
        ("python -c 'import alembic.command, sqlalchemy' (helper imports)",
         time_cmd([py, "-c", "import alembic.command, sqlalchemy"])),
        ("python -c 'import webapp' (job process imports)",
         time_cmd([py, "-c", "import webapp"], env)),
        ("python -c 'create_app()' (job process start-up)",
         time_cmd([py, "-c", "from webapp import create_app; create_app()"], env)),
    ]
    plan_times, run_times, sql_times = [], [], []
    plan_sql = 0
    for i in range(3):
        url = backend.new_url(f"plan{i}")
        elapsed, data = time_helper(ini, url, "plan", tmp)
        plan_times.append(elapsed)
        plan_sql = len(data.get("sql", ""))
        url = backend.new_url(f"run{i}")
        run_times.append(time_helper(ini, url, "run", tmp)[0])
        check_database(url)
        url = backend.new_url(f"sql{i}")
        sql_times.append(time_cli(cli_ini(ini.parent, f"sql{i}", url), "--sql"))
    rows += [
        (f"helper 'plan' op (offline SQL of {REVISIONS} revisions, {plan_sql // 1024} KiB)",
         statistics.median(plan_times)),
        ("alembic upgrade head --sql (CLI offline SQL, for comparison)",
         statistics.median(sql_times)),
        ("helper 'run' op (lock + describe + online upgrade, what a job runs)",
         statistics.median(run_times)),
        ("alembic upgrade head (CLI, median of the timed runs above)", cli_median),
    ]
    for label, value in rows:
        print(f"    {label:<70} {fmt_s(value)} s")
    if profile:
        url = backend.new_url("profplan")
        prof = tmp / f"plan-{backend.name}.prof"
        time_helper(ini, url, "plan", tmp, profile=prof)
        print()
        print(profile_summary(prof, f"  helper 'plan' op under cProfile ({backend.label}):"))
        url = backend.new_url("profrun")
        prof = tmp / f"run-{backend.name}.prof"
        time_helper(ini, url, "run", tmp, profile=prof)
        print()
        print(profile_summary(prof, f"  helper 'run' op under cProfile ({backend.label}):"))


# --------------------------------------------------------------------------- main

@dataclass
class Results:
    backend: Backend
    mode: str = "local"
    cli: list[float] = field(default_factory=list)
    dash: list[DashRun] = field(default_factory=list)
    warm_cli: float | None = None
    warm_dash: DashRun | None = None
    note: str = ""


def bench_backend(tmp: Path, ini: Path, backend: Backend, n: int, args,
                  mode: str = "local") -> Results:
    res = Results(backend, mode)
    names = [f"bench-{i}" for i in range(n + 1)]  # bench-0: warm-up
    dash_urls = {name: backend.new_url(f"{mode}_dash{i}") for i, name in enumerate(names)}
    cli_urls = [backend.new_url(f"{mode}_cli{i}") for i in range(n + 1)]
    server = start_server(tmp, backend, ini, dash_urls, mode)
    try:
        warm_server(server, names)
        # untimed warm-up pair: page cache, gunicorn workers' caches
        res.warm_cli = time_cli(cli_ini(ini.parent, f"{backend.name}-0", cli_urls[0]))
        check_database(cli_urls[0])
        res.warm_dash = time_dashboard(server, names[0], dash_urls[names[0]])
        for i in range(1, n + 1):
            res.cli.append(time_cli(cli_ini(ini.parent, f"{backend.name}-{i}", cli_urls[i])))
            check_database(cli_urls[i])
            run = time_dashboard(server, names[i], dash_urls[names[i]], args.poll)
            res.dash.append(run)
            print(f"  {backend.label} [{mode}] run {i}/{n}: CLI {res.cli[-1]:.3f} s | dashboard "
                  f"end-to-end {run.e2e:.3f} s, job {fmt_s(run.run, 0)} s, "
                  f"POST {run.post:.3f} s   (load {os.getloadavg()[0]:.2f})", flush=True)
        print_table(res)
        if not args.no_breakdown and mode == "local":
            breakdown(tmp, ini, backend, server, res.dash, statistics.median(res.cli),
                      args.profile)
            if args.profile:
                url = backend.new_url("profworker")
                # the worker reads the target's URL from url_env: reuse the warm-up
                # target, pointing it at a fresh database for this process only
                server.env[f"BENCH_URL_{0}"] = url
                print()
                print(profile_worker(tmp, server, names[0], url))
    finally:
        server.stop()
    return res


def print_table(res: Results) -> None:
    b = res.backend
    cli = statistics.median(res.cli)
    e2e = statistics.median([r.e2e for r in res.dash])
    runs = [r.run for r in res.dash if r.run is not None]
    run = median(runs)
    post = statistics.median([r.post for r in res.dash])
    n = len(res.cli)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print("=" * 78)
    how = ("jobs on Celery + Redis, one warm prefork worker" if res.mode == "celery"
           else "each job a new local process")
    print(f"alembic upgrade head, {REVISIONS} revisions (1 table each), {b.label}, n={n} "
          f"(interleaved)\nmode {res.mode}: {how}")
    print(f"machine: {os.cpu_count()} CPUs, load average {load} (other work skews figures)")
    print("-" * 78)
    print(f"{'':<44}{'median':>9}{'min':>9}{'max':>9}{'x CLI':>7}")

    def row(label: str, values: list[float], ratio: bool = True) -> None:
        if not values:
            print(f"{label:<44}{'-':>9}")
            return
        m = statistics.median(values)
        r = f"{m / cli:6.2f}x" if ratio else ""
        print(f"{label:<44}{m:8.3f}s{min(values):8.3f}s{max(values):8.3f}s{r:>7}")

    row("CLI  alembic upgrade head (wall)", res.cli, ratio=False)
    row("dashboard end-to-end (POST -> seen done)", [r.e2e for r in res.dash])
    row("dashboard job (POST answered -> seen done)", runs)
    row("dashboard POST latency (plan + launch)", [r.post for r in res.dash])
    if res.warm_dash is not None:
        print(f"(untimed warm-up: CLI {res.warm_cli:.3f} s, dashboard end-to-end "
              f"{res.warm_dash.e2e:.3f} s)")
    print("-" * 78)
    for label, value in (("job only", run), ("end-to-end", e2e)):
        if value is None:
            print(f"goal: dashboard {label} within {GOAL:.2f}x of CLI: n/a")
            continue
        verdict = "PASS" if value <= GOAL * cli else "FAIL"
        print(f"goal: dashboard {label:<10} within {GOAL:.2f}x of CLI   {verdict}  "
              f"({value / cli:.2f}x: {value:.3f} s vs {cli:.3f} s)")
    print(f"goal: POST answered within {POST_GOAL * 1000:.0f} ms               "
          f"{'PASS' if post < POST_GOAL else 'FAIL'}  ({post * 1000:.0f} ms median: the API "
          f"pins steps and checksums of the {REVISIONS} revisions, no offline SQL)")
    print("=" * 78)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="timed runs per backend and mode "
                        "(default 5)")
    parser.add_argument("--modes", default="local,celery",
                        help="comma-separated: local (a process per job), celery (a warm "
                             "Celery worker through Redis); default both")
    parser.add_argument("--backends", default="sqlite,mysql",
                        help="comma-separated: sqlite, mysql, postgresql (default "
                             "sqlite,mysql)")
    parser.add_argument("--env-import-seconds", type=float, default=0.0,
                        help="env.py imports a module that takes this long to import, "
                             "like a real project's models (default 0)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="skip the breakdown of the dashboard's extra time")
    parser.add_argument("--profile", action="store_true",
                        help="add cProfile summaries (helper plan/run ops, job process)")
    parser.add_argument("--poll", type=float, default=POLL,
                        help=f"seconds between job polls (default {POLL}); the phases from "
                             "the dashboard DB's timestamps do not depend on it")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-upgrade-"))
    load0 = os.getloadavg()
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in load0)} "
          f"({os.cpu_count()} CPUs)")
    env_dir = tmp / "env"
    slow = args.env_import_seconds
    make_env(env_dir, linear(REVISIONS), env_extra=(
        f"sys.path.insert(0, {str(env_dir)!r})\nimport bench_models  # noqa: F401"
        if slow else ""))
    if slow:  # a project's models: imported once per process, like any module
        (env_dir / "bench_models.py").write_text(f"import time\ntime.sleep({slow})\n")
    ini = env_dir / "alembic.ini"
    print(f"environment: {REVISIONS} revisions (linear, one create_table each) in {env_dir}"
          + (f"; env.py imports a module that takes {slow:g} s" if slow else ""))
    status = 0
    backends: list[Backend] = []
    try:
        for name in args.backends.split(","):
            name = name.strip()
            if name == "sqlite":
                backend: Backend = SQLiteBackend(tmp / "sqlite")
            elif name in ("mysql", "mariadb"):
                try:
                    backend = MariaDBBackend(MYSQL_SERVER)
                except Exception as exc:
                    print(f"\nMariaDB: skipped, server unavailable ({type(exc).__name__}: "
                          f"{exc})")
                    continue
            elif name in ("postgresql", "pg"):
                try:
                    backend = PostgreSQLBackend(PG_SERVER)
                except Exception as exc:
                    print(f"\nPostgreSQL: skipped, server unavailable ({type(exc).__name__}: "
                          f"{exc})")
                    continue
            else:
                raise SystemExit(f"unknown backend {name!r}")
            backends.append(backend)
            print(f"\n--- {backend.label} ---", flush=True)
            try:
                for mode in args.modes.split(","):
                    bench_backend(tmp, ini, backend, args.n, args, mode.strip())
            except RunError as exc:
                print(f"\n{backend.label}: WRONG RUN, figures not reported: {exc}")
                status = 1
            finally:
                backend.cleanup()
    finally:
        print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
