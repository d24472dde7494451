"""Lint severity per tier (issue 20, item 5): ``[tiers.<tier>.lint]`` maps
rule ids to error / warning / info; with ``block_on_error = true`` a plan
with an error-level finding cannot be requested or run on the tier's
targets (409 ``lint_blocked`` naming the rule and revision), and the plan
and request pages show the errors; the table's rules in the targets file."""

from __future__ import annotations

import re

import pytest
from support.common import add_user, login
from support.envtools import Rev, linear, make_env, sqlite_url, write_targets_file
from support.jobtools import token_headers, wait_job

from webapp.core.targets import TargetsFileError, load_targets

TIERS = '''
[tiers.production.lint]
block_on_error = true
drop_table = "error"

[tiers.staging.lint]
drop_table = "error"

[tiers.development.lint]
drop_table = "info"
'''


def lint_app(make_app, tmp_path, monkeypatch):
    """r000 creates t_r000, r001 drops it. ``prod`` (production, 1 approval),
    ``stage`` (staging, 1 approval), ``dev`` (development)."""
    revs = [*linear(1), Rev("r001", "r000", "drop the old table",
                            upgrade='op.drop_table("t_r000")',
                            downgrade='op.create_table("t_r000", sa.Column("id", sa.Integer, '
                                      'primary_key=True))')]
    ini = make_env(tmp_path / "env", revs)
    spec = {}
    for name, tier, approvals in (("prod", "production", 1), ("stage", "staging", 1),
                                  ("dev", "development", 0)):
        var = f"{name.upper()}_URL"
        monkeypatch.setenv(var, sqlite_url(tmp_path / f"{name}.db"))
        spec[name] = {"tier": tier, "alembic_ini": str(ini), "url_env": var,
                      "policy": {"approvals_required": approvals}}
    path = write_targets_file(tmp_path / "targets.toml", spec)
    path.write_text(path.read_text() + TIERS)
    app = make_app(path)
    return app, token_headers(app, "olga", "operator")


def upgrade(client, headers, target: str, revision: str = "head"):
    return client.post(f"/api/v1/targets/{target}/jobs", headers=headers, json={
        "command": "upgrade", "revision": revision, "reason": "release 7"})


def test_a_blocking_tier_refuses_error_findings_and_the_pages_say_so(make_app, tmp_path,
                                                                      monkeypatch):
    app, olga = lint_app(make_app, tmp_path, monkeypatch)
    client = app.test_client()
    refused = upgrade(client, olga, "prod")
    assert refused.status_code == 409 and refused.json["error"] == "lint_blocked"
    assert "The production tier blocks plans with lint errors" in refused.json["detail"]
    assert "drop_table in revision r001 (DROP TABLE t_r000)" in refused.json["detail"]
    lint = client.get("/api/v1/targets/prod/plan?command=upgrade&revision=head",
                      headers=olga).json["lint"]
    assert [(f["rule"], f["level"]) for f in lint] == [("drop_table", "error")]
    # a plan without the dropping revision is requested as always
    assert upgrade(client, olga, "prod", "r000").status_code == 202
    add_user(app, "olgaui", "operator")
    ui = app.test_client()
    login(ui, "olgaui")
    page = ui.get("/targets/prod/plan?command=upgrade&revision=head").get_data(as_text=True)
    assert 'id="lint-blocked"' in page and 'id="request-approval"' not in page
    assert "<code>drop_table</code> in <code>r001</code>" in page
    assert "1 error" in page and "✘ 1 lint error" in page
    # staging: an error, but the tier does not block: requested, shown as an error
    created = upgrade(client, olga, "stage")
    assert created.status_code == 202, created.json
    anna = app.test_client()
    add_user(app, "anna", "approver")
    login(anna, "anna")
    shown = anna.get(f"/requests/{created.json['request']}").get_data(as_text=True)
    checks = re.search(r'id="checks".*?</section>', shown, re.S).group(0)
    assert "✘ 1 lint error" in checks and "blocks this plan" not in checks
    assert 'level-error"><strong class="error">error</strong>' in checks
    # development lowers the rule to a note: it runs
    lint = client.get("/api/v1/targets/dev/plan?command=upgrade&revision=head",
                      headers=olga).json["lint"]
    assert [(f["rule"], f["level"]) for f in lint] == [("drop_table", "info")]
    job = upgrade(client, olga, "dev").json["job"]
    assert wait_job(client, job, olga)["status"] == "succeeded"


@pytest.mark.parametrize(("table", "message"), [
    ('[tiers.production.lint]\ndrop_tables = "error"\n',
     "key tiers.production.lint.drop_tables: unknown lint rule (known: block_on_error, "
     "drop_table, drop_column"),
    ('[tiers.production.lint]\ndrop_table = "fatal"\n',
     "key tiers.production.lint.drop_table: must be one of error, warning, info"),
    ('[tiers.production.lint]\nblock_on_error = "yes"\n',
     "key tiers.production.lint.block_on_error: must be true or false"),
    ('[tiers.production]\nlint = 3\n', "key tiers.production.lint: must be a table"),
])
def test_tier_lint_tables_in_the_targets_file(tmp_path, table, message):
    ini = make_env(tmp_path / "env", linear(1))
    path = write_targets_file(tmp_path / "targets.toml", {"prod": {
        "tier": "production", "alembic_ini": str(ini), "url_env": "P_URL"}})
    path.write_text(path.read_text() + table)
    with pytest.raises(TargetsFileError, match=re.escape(message)):
        load_targets(path)
    path.write_text(path.read_text().replace(table, '[tiers.production.lint]\n'
                                             'block_on_error = true\ntype_change = "error"\n'))
    lint = load_targets(path)["prod"].lint
    assert lint.block_on_error and dict(lint.levels) == {"type_change": "error"}
