"""Issue 19 item 4 on the real PostgreSQL: a rehearsal records, per
statement, the locks the migration's own backend held right after it
(``pg_locks`` before the commit) as ``observed_locks``, and the plan page
marks a forecast line whose lock the rehearsal did not observe."""

from __future__ import annotations

import pytest
from support.common import add_user, login
from support.envtools import Rev, make_env, write_targets_file
from support.jobtools import token_headers

from webapp.core import forecast
from webapp.core.runner import run_command
from webapp.core.targets import load_targets

pytestmark = pytest.mark.postgresql

REVISIONS = [
    Rev("r000", None, upgrade='op.create_table("items", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("name", sa.String(50)))'),
    Rev("r001", "r000", "default", upgrade='op.add_column("items", sa.Column("n", '
        'sa.Integer, server_default="0"))'),
    Rev("r002", "r001", "index", upgrade='op.create_index("ix_items_name", "items", ["name"])'),
]
PLAN = "/targets/shop/plan?command=upgrade&revision=heads"


def test_rehearsal_observes_locks_and_marks_a_wrong_forecast(make_app, tmp_path, monkeypatch,
                                                             pg_url):
    ini = make_env(tmp_path / "env", REVISIONS)
    monkeypatch.setenv("OBSERVE_URL", pg_url)
    targets = write_targets_file(tmp_path / "targets.toml", {"shop": {
        "tier": "staging", "alembic_ini": str(ini), "url_env": "OBSERVE_URL"}})
    run_command(load_targets(targets)["shop"], "upgrade", "r000", url=pg_url)
    app = make_app(targets)
    add_user(app, "olga", "operator")
    client = app.test_client()
    login(client, "olga")

    posted = app.test_client().post("/api/v1/targets/shop/rehearsals", json={
        "command": "upgrade", "revision": "heads"}, headers=token_headers(app, "ci", "operator"))
    assert posted.status_code == 201 and posted.json["passed"], posted.json
    observed = posted.json["observed_locks"]
    by_statement = {(o["revision"], o["statement"]): o for o in observed}
    added = by_statement[("r001", "ALTER TABLE items ADD COLUMN n INTEGER DEFAULT '0'")]
    assert added["taken"]["items"] == "ACCESS EXCLUSIVE"
    index = by_statement[("r002", "CREATE INDEX ix_items_name ON items (name)")]
    # the index's table: SHARE, newly taken when r002 runs in its own transaction or
    # held already (ACCESS EXCLUSIVE from r001) when the revisions share one
    assert index["locks"]["items"] in ("SHARE", "ACCESS EXCLUSIVE")
    assert index["locks"]["ix_items_name"] == "ACCESS EXCLUSIVE"  # the new index itself

    # the forecast agrees with the rehearsal: nothing marked
    page = client.get(PLAN).get_data(as_text=True)
    assert "Rehearsed OK" in page and "forecast wrong: observed" not in page

    # a forecast made wrong on purpose (ADD COLUMN said to take SHARE): marked
    real = forecast.forecast_sql

    def wrong(sql, dialect, **kwargs):
        lines = real(sql, dialect, **kwargs)
        for line in lines:
            if line["revision"] == "r001":
                line["lock"] = "SHARE"
        return lines

    monkeypatch.setattr(forecast, "forecast_sql", wrong)
    page = client.get(PLAN).get_data(as_text=True)
    assert "forecast wrong: observed ACCESS EXCLUSIVE" in page
    lines = forecast.forecast_live(load_targets(targets)["shop"],
                                   _plan_sql(client), "postgresql", url=pg_url)
    assert list(forecast.rehearsal_marks(lines, observed).values()) == ["ACCESS EXCLUSIVE"]


def _plan_sql(client) -> str:
    return client.get("/api/v1/targets/shop/plan?command=upgrade&revision=heads").json["sql"]
