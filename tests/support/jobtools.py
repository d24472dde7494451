"""Helpers for job tests: tokens, waiting for jobs, reading version tables."""

from __future__ import annotations

import time

import sqlalchemy as sa

from support.common import add_user
from webapp.services import accounts


def token_headers(app, username: str, role: str) -> dict:
    """Create ``username`` with ``role`` and return bearer headers for it."""
    add_user(app, username, role)
    with app.app_context():
        token = accounts.create_token(accounts.get_user(username), "tests")
    return {"Authorization": f"Bearer {token}"}


def wait_job(client, job_id: int, headers: dict | None = None, timeout: float = 60) -> dict:
    """Poll ``GET /api/v1/jobs/<id>`` until the job has ended; return its JSON.
    The polls start 20 ms apart and slow down to 0.3 s (most jobs in the
    suite end within a tenth of a second)."""
    deadline, pause = time.monotonic() + timeout, 0.02
    while True:
        data = client.get(f"/api/v1/jobs/{job_id}", headers=headers or {}).json
        if data["status"] not in ("queued", "running"):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {data['status']} after {timeout} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.3)


def version_table(url: str, table: str = "alembic_version") -> set[str]:
    """Rows of the version table (empty set when missing)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(table):
                return set()
            return {r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {table}"))}
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    """Names of the tables in the database of ``url``."""
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
