"""An invalid targets file stops `flask --app wsgi init` and gunicorn with one
clear line on stderr (file, line, key, problem), not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support.common import ROOT, free_port


@pytest.mark.parametrize("command", [
    ["-m", "flask", "--app", "wsgi", "init"],
    ["-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
], ids=["flask-init", "gunicorn"])
def test_invalid_targets_file_is_one_line_not_a_traceback(tmp_path, command):
    targets = tmp_path / "targets.toml"
    targets.write_text('[targets.shop]\nlabel = "Shop"\ntier = "prod"\n'
                       'alembic_ini = "alembic.ini"\nurl_env = "SHOP_URL"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update(DASHBOARD_TARGETS=str(targets), DASHBOARD_INSTANCE_PATH=str(tmp_path / "i"),
               DASHBOARD_SECRET_KEY="startup-test", PORT=str(free_port()))
    done = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert lines == [f"Alembic Dashboard cannot start: targets file {targets}, line 3, key "
                     "targets.shop.tier: must be one of development, staging, production "
                     "(got 'prod')"]


def test_the_app_starts_without_the_libraries_only_some_features_use(tmp_path):
    """Every gunicorn worker, job process and CLI command creates the app: a
    dashboard without single sign-on never imports Authlib (nor requests,
    joserfc), and sqlglot loads only when a plan is linted. On this 2-core
    machine they cost about half a second of CPU per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update(DASHBOARD_INSTANCE_PATH=str(tmp_path / "i"), DASHBOARD_SECRET_KEY="startup-test")
    probe = ("import sys; from webapp import create_app; create_app(); "
             "print(sorted(m for m in ('authlib', 'joserfc', 'requests', 'sqlglot') "
             "if m in sys.modules)); "
             "from webapp.core.lint import lint_sql; lint_sql('DROP TABLE t;', 'sqlite'); "
             "print('sqlglot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
