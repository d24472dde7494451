"""Current revision, heads and pending on SQLite, MariaDB and PostgreSQL,
read from real databases migrated by real Alembic."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from support.envtools import linear, make_env, sqlite_url

from webapp.core.demo import DEMO_TARGETS_FILE
from webapp.core.history import HistoryCache
from webapp.core.runner import TargetProcessError, run_command
from webapp.core.status import EngineCache, target_status
from webapp.core.targets import Target

DEMO_INI = DEMO_TARGETS_FILE.parent / "demo" / "alembic.ini"


def demo_target(monkeypatch, url: str, name: str = "demo", **kw) -> Target:
    monkeypatch.setenv("STATUS_TEST_URL", url)
    return Target(name=name, label=name, tier="staging", alembic_ini=DEMO_INI,
                  url_env="STATUS_TEST_URL", **kw)


def version_rows(url: str, table: str = "alembic_version") -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text(f"SELECT version_num FROM {table}"))}
    finally:
        engine.dispose()


def test_status_follows_real_upgrades(any_db_url, monkeypatch):
    target = demo_target(monkeypatch, any_db_url)
    histories, engines = HistoryCache(), EngineCache()
    sa.create_engine(any_db_url).connect().close()  # an empty database (creates the SQLite file)
    try:
        fresh = target_status(target, histories, engines)
        assert fresh.reachable and fresh.current == ()
        assert len(fresh.pending) == 15  # everything

        run_command(target, "upgrade", "7a2c9d6f4b86", url=any_db_url)
        status = target_status(target, histories, engines)
        assert status.current == tuple(version_rows(any_db_url)) == ("7a2c9d6f4b86",)
        script = ScriptDirectory.from_config(Config(str(DEMO_INI)))
        expected = [s.revision for s in reversed(list(script.revision_map.iterate_revisions(
            "heads", ("7a2c9d6f4b86",), implicit_base=True)))]
        assert [r.revision for r in status.pending] == expected
        assert status.current_revisions[0].message == "add profile fields to users"
        assert set(status.heads) == set(script.get_heads()) and status.multiple_heads

        run_command(target, "upgrade", "heads", url=any_db_url)
        done = target_status(target, histories, engines)
        assert set(done.current) == set(script.get_heads()) == version_rows(any_db_url)
        assert done.pending == [] and done.up_to_date
    finally:
        engines.dispose()


def test_custom_version_table(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'v.db')
    ini = make_env(tmp_path / "env", linear(3))
    monkeypatch.setenv("VT_URL", url)
    target = Target(name="vt", label="vt", tier="development", alembic_ini=ini,
                    url_env="VT_URL", version_table="shop_version")
    run_command(target, "upgrade", "r001", url=url)
    assert version_rows(url, "shop_version") == {"r001"}
    engines = EngineCache()
    status = target_status(target, HistoryCache(), engines)
    engines.dispose()
    assert status.current == ("r001",)
    assert [r.revision for r in status.pending] == ["r002"]


@pytest.mark.parametrize("url", [
    "mysql+pymysql://root:hunter2secret@127.0.0.1:1/test",
    "postgresql+psycopg://postgres:hunter2secret@127.0.0.1:1/test",
])
def test_unreachable_database_is_reported_fast_without_password(url, monkeypatch):
    target = demo_target(monkeypatch, url)
    engines = EngineCache()
    started = time.monotonic()
    status = target_status(target, HistoryCache(), engines)
    elapsed = time.monotonic() - started
    engines.dispose()
    assert not status.reachable
    assert elapsed < 10  # no long driver timeout (room for a loaded machine)
    assert status.error_class == "OperationalError"
    assert "hunter2secret" not in status.error
    assert status.history is not None  # history still shown


def test_wrong_password_on_real_mariadb_is_scrubbed(mysql_url, monkeypatch):
    bad = sa.engine.make_url(mysql_url).set(password="hunter2secret").render_as_string(
        hide_password=False)
    target = demo_target(monkeypatch, bad)
    engines = EngineCache()
    status = target_status(target, HistoryCache(), engines)
    engines.dispose()
    assert not status.reachable and "Access denied" in status.error
    assert "hunter2secret" not in status.error


def test_missing_sqlite_file_and_missing_variable(tmp_path, monkeypatch):
    target = demo_target(monkeypatch, f"sqlite:///{tmp_path / 'nope.db'}")
    engines = EngineCache()
    status = target_status(target, HistoryCache(), engines)
    assert not status.reachable and "does not exist" in status.error
    assert not (tmp_path / "nope.db").exists()  # reading status never creates a database
    monkeypatch.delenv("STATUS_TEST_URL")
    status = target_status(target, HistoryCache(), engines)
    assert not status.reachable and "STATUS_TEST_URL is not set" in status.error
    engines.dispose()


def test_database_that_does_not_exist_on_postgresql(pg_url, monkeypatch):
    missing = sa.engine.make_url(pg_url).set(database="adtest_missing_db").render_as_string(
        hide_password=False)
    target = demo_target(monkeypatch, missing)
    engines = EngineCache()
    status = target_status(target, HistoryCache(), engines)
    engines.dispose()
    assert not status.reachable and "does not exist" in status.error


def test_failing_command_reports_error_and_output(tmp_path, monkeypatch):
    url = sqlite_url(tmp_path / 'f.db')
    revs = linear(2)
    revs[1].upgrade = 'raise RuntimeError("boom in upgrade")'
    ini = make_env(tmp_path / "env", revs)
    target = Target(name="f", label="f", tier="development", alembic_ini=ini, url_env="F")
    with pytest.raises(TargetProcessError) as info:
        run_command(target, "upgrade", "head", url=url)
    assert info.value.error_type == "RuntimeError" and "boom in upgrade" in str(info.value)
    assert "Running upgrade r000 -> r001" in info.value.output
    assert version_rows(url) == {"r000"}
