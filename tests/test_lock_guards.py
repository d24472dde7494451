"""Lock-timeout guards with retries, and who blocks whom (issue 19, items 1-2).

Real PostgreSQL and MariaDB, real Alembic environments, real jobs through
the app: a table of 200,000 rows, another session holding a conflicting
lock, a probe reading the table every 10 ms while the job's ``ALTER TABLE
... ADD COLUMN`` waits at most its ``lock_timeout``.
"""

from __future__ import annotations

import re
import statistics
import threading
import time

import pytest
import sqlalchemy as sa
from support.common import add_user, csrf_from, login
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import token_headers, version_table, wait_job
from support.locktools import fill_big_table

from webapp.extensions import db
from webapp.models import AuditEvent

pytestmark = pytest.mark.timeout(60)

ADD_NOTE = Rev("r001", "r000", "add big.note",
               upgrade='op.add_column("big", sa.Column("note", sa.String(40)))',
               downgrade='op.drop_column("big", "note")')


def _app(make_app, tmp_path, monkeypatch, url, **policy):
    ini = make_env(tmp_path / "env", [Rev("r000", None, "base", upgrade="pass",
                                          downgrade="pass"), ADD_NOTE])
    fill_big_table(url)
    monkeypatch.setenv("LOCKS_TEST_URL", url)
    app = make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "LOCKS_TEST_URL",
        "policy": policy}}))
    return app


class Probe:
    """Reads ``big`` every 10 ms on an autocommit connection; keeps each read's latency."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                start = time.monotonic()
                conn.execute(sa.text("SELECT payload FROM big WHERE id = 4242")).all()
                self.latencies.append(time.monotonic() - start)
                time.sleep(0.01)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.engine.dispose()

    def p99(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98]


def _columns(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns("big")}
    finally:
        engine.dispose()


def _start_job(client, headers) -> int:
    response = client.post("/api/v1/targets/shop/jobs", headers=headers,
                           json={"command": "upgrade", "revision": "head"})
    assert response.status_code == 202, response.json
    return response.json["job"]


def _wait_blocked(client, job_id: int, headers, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
        if data.get("blocked_by"):
            return data
        assert data["status"] in ("queued", "running"), data
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never showed a blocker")


def test_policy_keys_and_tier_defaults(tmp_path):
    """lock_timeout / statement_timeout / lock_retries: the tier's defaults,
    overridden per key; out-of-range values refused with the key named."""
    from webapp.core.targets import TargetsFileError, load_targets

    ini = make_env(tmp_path / "env", [Rev("r000", None)])
    path = write_targets_file(tmp_path / "t.toml", {
        "prod": {"tier": "production", "alembic_ini": str(ini), "url_env": "X"},
        "dev": {"tier": "development", "alembic_ini": str(ini), "url_env": "X"},
        "mine": {"tier": "production", "alembic_ini": str(ini), "url_env": "X",
                 "policy": {"lock_timeout": 2, "lock_retries": 0}}})
    targets = load_targets(path)
    assert targets["prod"].policy.lock_guard == {"lock_timeout": 5.0, "statement_timeout": 0.0,
                                                 "lock_retries": 3}
    assert targets["dev"].policy.lock_guard == {"lock_timeout": 0.0, "statement_timeout": 0.0,
                                                "lock_retries": 0}
    assert targets["mine"].policy.lock_guard == {"lock_timeout": 2.0, "statement_timeout": 0.0,
                                                 "lock_retries": 0}
    for bad, key in ((-1, "lock_timeout"), ("5s", "statement_timeout"), (11, "lock_retries")):
        write_targets_file(path, {"x": {"tier": "staging", "alembic_ini": str(ini),
                                        "url_env": "X", "policy": {key: bad}}})
        with pytest.raises(TargetsFileError, match=f"key targets.x.policy.{key}"):
            load_targets(path)


def test_helpers_lock_timeouts_concurrent_indexes_and_redacted_queries():
    """What counts as a lock timeout per driver, which statements are never
    retried, the backoff, and how another session's query is shown."""
    from webapp.agent.alembic_dashboard_agent import lock_guard
    from webapp.core.redaction import redact_query

    class PgError(Exception):
        sqlstate = "55P03"

    class Wrapped(Exception):
        def __init__(self, orig):
            self.orig = orig

    assert lock_guard.is_lock_timeout(Wrapped(PgError("canceling statement due to lock timeout")))
    assert lock_guard.is_lock_timeout(Wrapped(Exception(1205, "Lock wait timeout exceeded")))
    assert lock_guard.is_lock_timeout(Wrapped(Exception("database is locked")))
    statement_timeout = type("E", (Exception,), {"sqlstate": "57014"})
    assert not lock_guard.is_lock_timeout(Wrapped(statement_timeout("canceling statement")))
    assert not lock_guard.is_lock_timeout(Wrapped(Exception(1062, "Duplicate entry")))
    assert lock_guard.is_concurrent_index("CREATE UNIQUE INDEX CONCURRENTLY ix ON t (a)")
    assert lock_guard.is_concurrent_index("REINDEX INDEX  CONCURRENTLY ix")
    assert not lock_guard.is_concurrent_index("CREATE INDEX ix ON t (a)")
    assert [lock_guard.backoff(n) for n in (1, 2, 3, 10)] == [0.25, 0.5, 1.0, 5.0]
    assert redact_query("UPDATE users SET email = 'bob@example.com', n = 3 WHERE name = "
                        "'O''Brien'") == "UPDATE users SET email = '…', n = 3 WHERE name = '…'"
    assert redact_query(None) is None and len(redact_query("select 1, " * 500)) == 2001


def test_a_whole_retry_forgets_only_the_rolled_back_steps():
    """After a rolled-back attempt the steps the database no longer has are
    dropped: all of the attempt's (one transaction for the job), or those
    after the last committed one (transaction_per_migration)."""
    from webapp.agent.alembic_dashboard_agent.run import _forget_rolled_back

    def steps(*ids):
        return [{"revision": i} for i in ids]

    applied, heads = steps("a", "b", "c"), [["a"], ["b"], ["c"]]
    _forget_rolled_back(applied, heads, 1, ["a"], ["a"])  # one transaction: b, c gone
    assert applied == steps("a") and heads == [["a"]]
    applied, heads = steps("a", "b", "c"), [["a"], ["b"], ["c"]]
    _forget_rolled_back(applied, heads, 0, [], ["b"])  # per migration: a, b committed
    assert applied == steps("a", "b") and heads == [["a"], ["b"]]


@pytest.mark.alone  # the probe's latency is measured: not while other tests busy the cores
@pytest.mark.timeout(45)
@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_chaos_guarded_alter_waits_at_most_lock_timeout_then_fails(
        dialect, request, make_app, tmp_path, monkeypatch):
    """Another session holds a conflicting lock for longer than the retries
    take; a probe reads the table every 10 ms while the job's ALTER TABLE
    ADD COLUMN runs with lock_timeout = 1: the probe's p99 stays within
    lock_timeout + 200 ms, the job tries 1 + lock_retries times, fails naming
    the blocker's pid and query, and nothing is half-applied."""
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    app = _app(make_app, tmp_path, monkeypatch, url, lock_timeout=1, lock_retries=2)
    headers = token_headers(app, "ops", "operator")
    client = app.test_client()
    blocker_engine = sa.create_engine(url)
    blocker = blocker_engine.connect()
    try:
        if dialect == "postgresql":
            pid = blocker.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            blocker.execute(sa.text("SELECT id FROM big WHERE id = 1 FOR SHARE")).all()
            expected_query = "FOR SHARE"
        else:  # an open transaction that read the table, now in a long report query
            pid = blocker.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
            blocker.execute(sa.text("SELECT COUNT(*) FROM big")).all()
            expected_query = "SLEEP(30)"

            def report():
                try:
                    blocker.execute(sa.text("SELECT SLEEP(30)")).all()
                except Exception:  # noqa: BLE001 - killed at the end of the test
                    pass

            threading.Thread(target=report, daemon=True).start()
        time.sleep(0.2)
        with Probe(url) as probe:
            time.sleep(0.2)
            job = wait_job(client, _start_job(client, headers), headers, timeout=30)
    finally:
        if dialect != "postgresql":
            with sa.create_engine(url).connect() as killer:
                killer.execute(sa.text(f"KILL {pid:d}"))
        blocker.invalidate() if dialect != "postgresql" else blocker.close()
        blocker_engine.dispose()
    assert job["status"] == "failed", job["log"]
    assert "3 attempt(s)" in job["error"] and "lock_timeout 1 s" in job["error"]
    assert "retry 2 of 2" in job["log"] and "retry 3" not in job["log"]
    assert f"pid {pid}" in job["error"] and expected_query in job["error"]
    assert [b["pid"] for b in job["blocked_by"]] == [pid] or pid in \
        [b["pid"] for b in job["blocked_by"]]
    assert set(job["blocked_by"][0]) == {"pid", "user", "state", "since", "query"}
    mine = next(b for b in job["blocked_by"] if b["pid"] == pid)
    assert expected_query in mine["query"]
    assert "note" not in _columns(url) and version_table(url) == {"r000"}
    assert len(probe.latencies) > 100
    assert probe.p99() < 1.2, sorted(probe.latencies)[-10:]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("dialect", ["postgresql", "mariadb"])
def test_guarded_job_succeeds_once_the_blocker_commits(dialect, request, make_app, tmp_path,
                                                      monkeypatch):
    """The blocker commits during the retries and the job succeeds: on
    PostgreSQL the revision's transaction (rolled back on the lock timeout)
    is retried whole, on MariaDB (no transactional DDL) the statement; the
    job keeps the session it waited on."""
    url = request.getfixturevalue("pg_url" if dialect == "postgresql" else "mysql_url")
    app = _app(make_app, tmp_path, monkeypatch, url, lock_timeout=1, lock_retries=3)
    headers = token_headers(app, "ops", "operator")
    client = app.test_client()
    engine = sa.create_engine(url)
    blocker = engine.connect()
    if dialect == "postgresql":
        pid = blocker.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        blocker.execute(sa.text("SELECT id FROM big WHERE id = 1 FOR SHARE")).all()
    else:
        pid = blocker.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
        blocker.execute(sa.text("SELECT COUNT(*) FROM big")).all()
    try:
        job_id = _start_job(client, headers)
        deadline = time.monotonic() + 15
        while "retry 1 of 3" not in client.get(f"/api/v1/jobs/{job_id}",
                                               headers=headers).json["log"]:
            assert time.monotonic() < deadline, "the job never retried"
            time.sleep(0.05)
        blocker.commit()  # during the backoff before the second attempt
        job = wait_job(client, job_id, headers, timeout=20)
    finally:
        blocker.close()
        engine.dispose()
    assert job["status"] == "succeeded", job["log"]
    assert "retry 1 of 3" in job["log"] and "retry 2" not in job["log"]
    if dialect == "postgresql":
        assert "the revision's transaction was rolled back" in job["log"]
    else:
        assert "lock timeout on ALTER TABLE big ADD COLUMN note" in job["log"]
    assert "note" in _columns(url) and version_table(url) == {"r001"}
    assert job["applied"] == ["r001"] and job["to"] == ["r001"]
    assert pid in [b["pid"] for b in job["blocked_by"]]


@pytest.mark.timeout(40)
def test_admin_cancels_the_blocking_query(make_app, tmp_path, monkeypatch, pg_url):
    """The job page shows the blocking session; an operator may not cancel
    it (403, audited), a session that does not block the job is refused
    (409), an admin cancels it through the page's form (CSRF), audited with
    the session's query, and the job then succeeds."""
    app = _app(make_app, tmp_path, monkeypatch, pg_url, lock_timeout=5, lock_retries=2)
    headers = token_headers(app, "ops", "operator")
    add_user(app, "ada", "admin")
    client = app.test_client()
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    report = engine.connect()
    pid = report.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    done = threading.Event()

    def long_report():
        try:
            report.execute(sa.text("SELECT pg_sleep(25), count(*) FROM big")).all()
        except sa.exc.DBAPIError:
            done.set()  # cancelled

    threading.Thread(target=long_report, daemon=True).start()
    try:
        time.sleep(0.3)
        job_id = _start_job(client, headers)
        blocked = _wait_blocked(client, job_id, headers)
        assert pid in [b["pid"] for b in blocked["blocked_by"]]

        denied = client.post(f"/api/v1/jobs/{job_id}/blockers/cancel", headers=headers,
                             json={"pid": pid})
        assert denied.status_code == 403, denied.json
        assert client.post(f"/api/v1/jobs/{job_id}/blockers/cancel", headers=headers,
                           json={"pid": "x"}).status_code == 400

        login(client, "ada")
        page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
        assert f'data-pid="{pid}"' in page and "Cancel its query" in page
        assert "pg_sleep(25)" in page
        wrong = client.post(f"/jobs/{job_id}/blockers/cancel",
                            data={"csrf_token": csrf_from(page), "pid": str(pid + 100000)})
        assert wrong.status_code == 409
        assert not done.is_set()
        response = client.post(f"/jobs/{job_id}/blockers/cancel",
                               data={"csrf_token": csrf_from(page), "pid": str(pid)})
        assert response.status_code == 303, response.get_data(as_text=True)[-500:]
        assert done.wait(5)
        job = wait_job(client, job_id, headers, timeout=20)
    finally:
        report.invalidate()
        engine.dispose()
    assert job["status"] == "succeeded", job["log"]
    with app.app_context():
        events = db.session.execute(db.select(AuditEvent).filter_by(
            action="job.cancel_blocker").order_by(AuditEvent.id)).scalars().all()
        assert [(e.username, e.outcome) for e in events] == [
            ("ops", "denied"), ("ops", "denied"), ("ada", "denied"), ("ada", "ok")]
        assert f'"pid": {pid}' in events[-1].details and "pg_sleep(25)" in events[-1].details


_CIC_BODY = [
    'guard = op.get_bind().exec_driver_sql("SHOW lock_timeout").scalar()',
    'print(f"lock_timeout in the transaction: {guard}")',
    "with op.get_context().autocommit_block():",
    '    kept = op.get_bind().exec_driver_sql("SHOW lock_timeout").scalar()',
    '    print(f"lock_timeout in autocommit_block: {kept}")',
    '    op.create_index("ix_big_payload", "big", ["payload"], postgresql_concurrently=True)']
# revision_source puts the body at 12 spaces before it dedents the file's text
CIC = Rev("r001", "r000", "index big.payload concurrently",
          upgrade=("\n" + " " * 12).join(_CIC_BODY),
          downgrade='op.drop_index("ix_big_payload", "big")')


def _cic_app(make_app, tmp_path, monkeypatch, url, **policy):
    ini = make_env(tmp_path / "env", [Rev("r000", None, "base", upgrade="pass",
                                          downgrade="pass"), CIC])
    fill_big_table(url)
    monkeypatch.setenv("LOCKS_TEST_URL", url)
    return make_app(write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "LOCKS_TEST_URL",
        **({"policy": policy} if policy else {})}}))


@pytest.mark.timeout(30)
def test_production_default_guard_is_kept_through_autocommit_block(
        make_app, tmp_path, monkeypatch, pg_url):
    """A production target without lock keys gets lock_timeout 5 s on the
    migration's connection, still set inside autocommit_block() for CREATE
    INDEX CONCURRENTLY; a job that never waited has no blocked_by."""
    app = _cic_app(make_app, tmp_path, monkeypatch, pg_url)
    headers = token_headers(app, "ops", "operator")
    client = app.test_client()
    job = wait_job(client, _start_job(client, headers), headers, timeout=20)
    assert job["status"] == "succeeded", job["log"]
    assert "lock guard on postgresql: lock_timeout 5 s" in job["log"]
    assert "lock_timeout in the transaction: 5s" in job["log"]
    assert "lock_timeout in autocommit_block: 5s" in job["log"]
    assert "blocked_by" not in job


@pytest.mark.timeout(30)
def test_timed_out_create_index_concurrently_reports_the_invalid_index(
        make_app, tmp_path, monkeypatch, pg_url):
    """CREATE INDEX CONCURRENTLY waits for a transaction that writes the
    table; it gives up after lock_timeout, is not retried (it left an
    INVALID index), and the job's error names that index and how to drop it."""
    app = _cic_app(make_app, tmp_path, monkeypatch, pg_url, lock_timeout=1, lock_retries=2)
    headers = token_headers(app, "ops", "operator")
    client = app.test_client()
    engine = sa.create_engine(pg_url)
    writer = engine.connect()
    pid = writer.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    writer.execute(sa.text("UPDATE big SET payload = 'x' WHERE id = 7"))
    try:
        job = wait_job(client, _start_job(client, headers), headers, timeout=20)
    finally:
        writer.close()
        engine.dispose()
    assert job["status"] == "failed", job["log"]
    assert "retry" not in job["log"]  # never retried
    assert "INVALID index left behind" in job["error"]
    assert "DROP INDEX CONCURRENTLY public.ix_big_payload" in job["error"]
    assert pid in [b["pid"] for b in job["blocked_by"]]
    assert "'…'" in job["blocked_by"][0]["query"]  # the literal 'x' is not shown
    assert version_table(pg_url) == {"r000"}
    add_user(app, "ada", "admin")
    login(client, "ada")
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "Drop the INVALID index" in page and "it gave up waiting for a lock" in page
    # the INVALID index first (running the CIC again would fail on it), then the lock
    assert 'data-recommended="drop_invalid_index"' in page
    assert re.findall(r'<li data-step="(\w+)"', page) == ["wait_for_blockers", "fix_and_rerun"]
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=headers).json["recovery"][
        "failed_state"] == "rolled_back"
    assert f'data-pid="{pid}"' in page and "Cancel its query" not in page  # it has ended


@pytest.mark.timeout(40)
def test_admin_kills_the_blocking_query_on_mariadb(make_app, tmp_path, monkeypatch, mysql_url):
    """MariaDB: the admin's cancel through the API is ``KILL QUERY`` of the
    report that holds the table's metadata lock in its open transaction; its
    client rolls back on the error, and the job's ALTER goes on."""
    app = _app(make_app, tmp_path, monkeypatch, mysql_url, lock_timeout=5, lock_retries=2)
    headers = token_headers(app, "ops", "operator")
    admin = token_headers(app, "ada", "admin")
    client = app.test_client()
    engine = sa.create_engine(mysql_url)
    report = engine.connect()
    pid = report.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
    report.execute(sa.text("SELECT COUNT(*) FROM big")).all()
    killed = threading.Event()

    def long_report():
        try:
            report.execute(sa.text("SELECT SLEEP(25)")).all()
        except sa.exc.DBAPIError:
            pass
        finally:  # a killed query returns 1 (MariaDB) or raises: the client rolls back
            report.rollback()
            killed.set()

    threading.Thread(target=long_report, daemon=True).start()
    try:
        job_id = _start_job(client, headers)
        blocked = _wait_blocked(client, job_id, headers)
        assert pid in [b["pid"] for b in blocked["blocked_by"]]
        response = client.post(f"/api/v1/jobs/{job_id}/blockers/cancel", headers=admin,
                               json={"pid": pid})
        assert response.status_code == 200, response.json
        assert response.json == {"pid": pid, "cancelled": True}
        assert killed.wait(5)
        job = wait_job(client, job_id, headers, timeout=20)
    finally:
        report.invalidate()
        engine.dispose()
    assert job["status"] == "succeeded", job["log"]
    assert "note" in _columns(mysql_url)
    with app.app_context():
        event = db.session.execute(db.select(AuditEvent).filter_by(
            action="job.cancel_blocker", outcome="ok")).scalar_one()
        assert event.username == "ada" and f'"pid": {pid}' in event.details
