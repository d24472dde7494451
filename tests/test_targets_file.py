"""The targets file: valid files load; invalid ones name file, line, key and problem."""

from __future__ import annotations

import pytest
from support.envtools import linear, make_env

from webapp.core.targets import TargetsFileError, load_targets, redact_url, scrub_secrets


@pytest.fixture
def ini(tmp_path):
    return make_env(tmp_path / "env", linear(2))


def write(tmp_path, text: str):
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_full_example_loads_with_defaults_and_relative_paths(tmp_path, ini):
    path = write(tmp_path, """
[targets.shop-staging]
label = "Shop (staging)"
tier = "staging"
alembic_ini = "env/alembic.ini"
url_env = "SHOP_URL"
version_table = "shop_version"
[targets.shop-staging.env]
SHOP_SETTINGS = "x.cfg"
[targets.shop-staging.policy]
approvals_required = 2
allow_downgrade = false

[targets.other]
tier = "development"
alembic_ini = "env/alembic.ini"
url_env = "OTHER_URL"
""")
    targets = load_targets(path)
    assert list(targets) == ["shop-staging", "other"]
    shop = targets["shop-staging"]
    assert shop.alembic_ini == ini.resolve()
    assert shop.ini_section == "alembic"
    assert shop.version_table == "shop_version"
    assert shop.env == {"SHOP_SETTINGS": "x.cfg"}
    assert shop.policy.approvals_required == 2 and shop.policy.is_protected
    assert shop.policy.allow_downgrade is False
    assert shop.policy.allow_revision_authoring is False and shop.policy.run_on_approval
    other = targets["other"]
    assert other.label == "other" and other.version_table == "alembic_version"
    assert not other.policy.is_protected


def test_url_comes_from_environment_only(tmp_path, ini, monkeypatch):
    path = write(tmp_path, '[targets.a]\ntier="staging"\nalembic_ini="env/alembic.ini"\n'
                           'url_env="A_URL"\n')
    target = load_targets(path)["a"]
    monkeypatch.delenv("A_URL", raising=False)
    with pytest.raises(Exception, match="A_URL is not set"):
        target.database_url()
    monkeypatch.setenv("A_URL", "sqlite:///x.db")
    assert target.database_url() == "sqlite:///x.db"


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ('[targets.a]\ntier = "prod"\nalembic_ini="env/alembic.ini"\nurl_env="U"\n', 2,
     "targets.a.tier", "must be one of development, staging, production"),
    ('[targets.a]\ntier = "staging"\nurl_env="U"\n', 1, "targets.a.alembic_ini", "is required"),
    ('[targets.a]\ntier = "staging"\nalembic_ini="nope/alembic.ini"\nurl_env="U"\n', 3,
     "targets.a.alembic_ini", "file not found"),
    ('[targets.a]\ntier = "staging"\nalembic_ini="env/alembic.ini"\nurl_env="U"\ncolour=1\n',
     5, "targets.a.colour", "unknown key"),
    ('[targets.a]\ntier = "staging"\nalembic_ini="env/alembic.ini"\nurl_env="U"\n'
     '[targets.a.policy]\napprovals_required = "one"\n', 6,
     "targets.a.policy.approvals_required", "must be an integer"),
    ('[targets.a]\ntier = "staging"\nalembic_ini="env/alembic.ini"\nurl_env="postgres://x"\n',
     4, "targets.a.url_env", "environment variable name"),
])
def test_invalid_file_names_line_key_and_problem(tmp_path, ini, text, line, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(TargetsFileError) as info:
        load_targets(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}" in message
    assert key in message
    assert problem in message


def test_toml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, '[targets.a]\ntier = "staging\n')
    with pytest.raises(TargetsFileError, match=r"line 2.*invalid TOML"):
        load_targets(path)


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(TargetsFileError, match="no targets defined"):
        load_targets(write(tmp_path, ""))
    with pytest.raises(TargetsFileError, match="cannot read"):
        load_targets(tmp_path / "missing.toml")


def test_invalid_file_stops_the_app(make_app, tmp_path, ini):
    path = write(tmp_path, '[targets.a]\ntier = "prod"\n')
    with pytest.raises(TargetsFileError, match="targets.a.tier"):
        make_app(path)


def test_redaction_never_shows_password():
    url = "mysql+pymysql://shop:s3cr3t-pw@db.example:3306/shop"
    assert "s3cr3t-pw" not in redact_url(url)
    assert "***" in redact_url(url)
    text = f"could not connect to {url}: access denied for password s3cr3t-pw"
    assert "s3cr3t-pw" not in scrub_secrets(text, url)
