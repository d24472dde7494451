"""The dashboard keeps no idle connection open to a target's database for
more than a few seconds (issue 22, item 8): a PostgreSQL ``DROP DATABASE`` of
a target failed while the dashboard ran, because status reads kept pooled
connections open for good."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from support.common import PG_SERVER, add_user, login
from support.envtools import linear, make_env, write_targets_file

from webapp.core.runner import run_command
from webapp.core.status import IDLE_CLOSE_SECONDS
from webapp.core.targets import load_targets


@pytest.mark.postgresql
def test_status_reads_leave_no_connection_to_the_target(make_app, tmp_path, monkeypatch,
                                                        pg_url):
    ini = make_env(tmp_path / "env", linear(2))
    monkeypatch.setenv("PG_T_URL", pg_url)
    targets = write_targets_file(tmp_path / "targets.toml", {"t": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "PG_T_URL"}})
    run_command(load_targets(targets)["t"], "upgrade", "r000", url=pg_url)
    app = make_app(targets)
    add_user(app, "vera", "viewer")
    client = app.test_client()
    login(client, "vera")
    for _ in range(3):
        card = client.get("/targets/t/card")
        assert card.status_code == 200 and "r000" in card.get_data(as_text=True)
        assert client.get("/api/v1/targets").json[0]["current"] == ["r000"]
    name = sa.engine.make_url(pg_url).database
    server = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + IDLE_CLOSE_SECONDS + 10  # a hang guard, not a timing
    try:
        while True:
            with server.connect() as conn:
                open_connections = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :n"),
                    {"n": name}).scalar()
            if open_connections == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert open_connections == 0, "the dashboard kept an idle connection to the target"
    finally:
        server.dispose()
