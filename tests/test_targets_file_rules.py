"""The targets file's rules, one by one, with their exact messages.

Characterization tests (issue 18, item 2): they pin the wording, key and line of
every rule of a ``[targets.<name>]`` / ``[tiers.<tier>.policy]`` table as the
hand-written parser had them, so that the pydantic models keep them; they
pass on the code before that change as well as after it.
"""

from __future__ import annotations

import pytest
from support.envtools import linear, make_env

from webapp.core.targets import TargetsFileError, load_targets

HEAD = '[targets.a]\ntier = "staging"\nalembic_ini = "env/alembic.ini"\nurl_env = "U"\n'
KNOWN_KEYS = ("alembic_ini, cwd, directory, env, flask_app, ini_section, label, policy, "
              "python, queue, readonly_url_env, rehearsal_url_env, stairway, tags, tier, "
              "url_env, version_table, webhook_url")
POLICY_KEYS = ("approvals_required, allow_downgrade, allow_revision_authoring, "
               "run_on_approval, lock_timeout, statement_timeout, lock_retries, "
               "promote_from, promote_requires_rehearsal, promote_requires_stairway, "
               "viewers, operators, approvers, admins")


@pytest.fixture
def folder(tmp_path):
    make_env(tmp_path / "env", linear(1))
    return tmp_path


@pytest.mark.parametrize(("extra", "line", "key", "problem"), [
    ('version_table = "1v"\n', 5, "version_table", "must be a plain table name"),
    ('version_table = 3\n', 5, "version_table", "must be a non-empty string"),
    ('label = ""\n', 5, "label", "must be a non-empty string"),
    ('ini_section = "  "\n', 5, "ini_section", "must be a non-empty string"),
    ('webhook_url = "ftp://x"\n', 5, "webhook_url", "must be an http:// or https:// URL"),
    ('queue = "-q"\n', 5, "queue",
     "must be a queue name (letters, digits, '.', '_', '-'; 1-64)"),
    ('readonly_url_env = "a-b"\n', 5, "readonly_url_env",
     "must be an environment variable name (letters, digits, _)"),
    ('rehearsal_url_env = ["X"]\n', 5, "rehearsal_url_env", "must be a non-empty string"),
    ('cwd = "nowhere"\n', 5, "cwd", "directory not found: {folder}/nowhere"),
    ('tags = ["bad tag"]\n', 5, "tags",
     "must be a list of tags (letters, digits, '.', '_', '-'; 1-64 each)"),
    ('env = "X"\n', 5, "env", "must be a table of string values"),
    # a problem inside a sub-table is reported at its target's header (best effort)
    ('[targets.a.env]\nX = 1\n', 1, "env", "must be a table of string values"),
    ('policy = 1\n', 5, "policy", "must be a table"),
    ('[targets.a.policy]\napprovals_required = 11\n', 6, "policy.approvals_required",
     "must be between 0 and 10"),
    ('[targets.a.policy]\napprovals_required = true\n', 6, "policy.approvals_required",
     "must be an integer"),
    ('[targets.a.policy]\nallow_downgrade = 1\n', 6, "policy.allow_downgrade",
     "must be true or false"),
    ('[targets.a.policy]\ncolour = 1\n', 6, "policy.colour",
     f"unknown policy key (known: {POLICY_KEYS})"),
    ('zeta = 1\nalpha = 2\n', 6, "alpha", f"unknown key (known keys: {KNOWN_KEYS})"),
    # the stairway test's row sample: rows per table, 0 (schema only) to 10000
    ('stairway = 5\n', 5, "stairway", "must be a table"),
    *[(f'[targets.a.stairway]\nrows = {bad}\n', 6, "stairway.rows", "must be a whole number "
       "of rows per table from 0 (schema only) to 10000") for bad in ("-1", "10001", '"5"',
                                                                     "2.5", "true")],
    ('[targets.a.stairway]\nsample = 5\n', 6, "stairway.sample",
     "unknown stairway key (known: rows)"),
    # the order the rules are checked in: unknown keys before any value ...
    ('colour = 1\nqueue = "-q"\n', 5, "colour", f"unknown key (known keys: {KNOWN_KEYS})"),
    # ... the keys in a fixed order (tier first, tags after queue) ...
    ('tags = 1\nqueue = "-q"\n', 6, "queue",
     "must be a queue name (letters, digits, '.', '_', '-'; 1-64)"),
    # ... in a policy table the grant lists first, then its keys in file order
    ('[targets.a.policy]\nallow_downgrade = 1\nviewers = ["x"]\n', 7, "policy.viewers",
     "entries are \"group:<name>\" or \"user:<name>\" (got 'x')"),
    ('[targets.a.policy]\nallow_downgrade = 1\ncolour = 1\n', 6, "policy.allow_downgrade",
     "must be true or false"),
    ('[targets.a.policy]\ncolour = 1\nallow_downgrade = 1\n', 6, "policy.colour",
     f"unknown policy key (known: {POLICY_KEYS})"),
])
def test_each_rule_of_a_target_names_line_key_and_problem(folder, extra, line, key, problem):
    path = folder / "targets.toml"
    path.write_text(HEAD + extra)
    with pytest.raises(TargetsFileError) as info:
        load_targets(path)
    assert str(info.value) == (f"targets file {path}, line {line}, key targets.a.{key}: "
                               + problem.format(folder=folder))


@pytest.mark.parametrize(("text", "message"), [
    ('[targets."b c"]\ntier = "staging"\n', 'line 1, key targets.b c: target names may use '
     "letters, digits, '.', '_' and '-' (1-64 characters)"),
    ('targets.a = 1\n', "key targets.a: must be a table"),
    ('colour = 1\n' + HEAD, "key colour: unknown top-level key (expected [targets.<name>] "
     "and optional [tiers.<tier>.policy])"),
    ('tiers = 1\n' + HEAD, "key tiers: must be a table of [tiers.<tier>.policy]"),
    (HEAD + '[tiers.staging.other]\n', "key tiers.staging: only [tiers.<tier>.policy] and "
     "[tiers.<tier>.lint] tables are allowed"),
    (HEAD + '[tiers.staging.policy]\nviewers = ["x"]\nzz = 1\nbb = 2\n',
     "key tiers.staging.policy.bb: unknown tier policy key (known: viewers, operators, "
     "approvers, admins)"),
    (HEAD + '[tiers.staging.policy]\nadmins = [1]\nviewers = ["x"]\n',
     "key tiers.staging.policy.viewers: entries are \"group:<name>\" or \"user:<name>\" "
     "(got 'x')"),
])
def test_file_level_and_tier_rules(folder, text, message):
    path = folder / "targets.toml"
    path.write_text(text)
    with pytest.raises(TargetsFileError) as info:
        load_targets(path)
    assert str(info.value) == f"targets file {path}, {message}"


def test_defaults_and_values_of_a_full_entry(folder):
    path = folder / "targets.toml"
    path.write_text(HEAD + 'label = "Shop"\nini_section = "other"\nversion_table = "v$1"\n'
                    'readonly_url_env = "R"\nrehearsal_url_env = "H"\n'
                    'webhook_url = "https://hooks.example/x"\nqueue = "q.1"\n'
                    'tags = ["eu", "tenant", "eu"]\n'
                    '[targets.a.policy]\nrun_on_approval = false\n'
                    'allow_revision_authoring = true\noperators = ["group:a", "user:b"]\n'
                    '[targets.a.stairway]\nrows = 25\n'
                    '[targets.f]\ntier = "development"\nflask_app = "app:create_app()"\n'
                    '[tiers.development.policy]\nadmins = ["user:root"]\n')
    targets = load_targets(path)
    a, f = targets["a"], targets["f"]
    assert (a.label, a.ini_section, a.version_table) == ("Shop", "other", "v$1")
    assert (a.readonly_url_env, a.rehearsal_url_env, a.queue) == ("R", "H", "q.1")
    assert a.webhook_url == "https://hooks.example/x" and a.tags == ("eu", "tenant")
    assert a.policy.run_on_approval is False and a.policy.allow_revision_authoring is True
    assert a.policy.approvals_required == 0 and a.policy.allow_downgrade is True
    assert a.policy.grants.operators == ("group:a", "user:b") and a.tier_grants.is_empty
    assert a.directory is None and a.cwd is None and a.python is None
    assert f.alembic_ini is None and f.url_env is None and f.label == "f"
    assert f.directory == (folder / "migrations").resolve()
    assert f.tier_grants.admins == ("user:root",) and f.policy.grants.is_empty
    assert a.stairway_rows == 25 and f.stairway_rows == 0  # 0: schema only
