"""History read from source equals what Alembic's own ScriptDirectory says."""

from __future__ import annotations

import os
import time

import pytest
from alembic import util
from alembic.config import Config
from alembic.script import ScriptDirectory
from support.envtools import Rev, branched, linear, make_env, write_revision

from webapp.core.demo import DEMO_TARGETS_FILE
from webapp.core.history import HistoryCache, HistoryError, build_history, script_directory_paths
from webapp.core.targets import Target


def target_for(ini) -> Target:
    return Target(name="t", label="t", tier="development", alembic_ini=ini, url_env="T_URL")


def assert_same_as_alembic(ini, cache: HistoryCache | None = None):
    """Our History equals ScriptDirectory.from_config for the same directory."""
    history = (cache or HistoryCache()).get(target_for(ini))
    script = ScriptDirectory.from_config(Config(str(ini)))
    scripts = {s.revision: s for s in script.walk_revisions()}
    assert set(history.by_id) == set(scripts)
    assert set(history.heads) == set(script.get_heads())
    assert set(history.bases) == set(script.get_bases())
    for rid, s in scripts.items():
        info = history.by_id[rid]
        assert set(info.down_revisions) == set(s._versioned_down_revisions), rid
        assert set(info.depends_on) == set(util.to_tuple(s.dependencies, default=())), rid
        assert set(info.branch_labels) == set(s._orig_branch_labels), rid
        assert info.message == s.doc, rid
        assert info.is_branch_point == s.is_branch_point, rid
        assert info.is_merge_point == s.is_merge_point, rid
        assert info.is_head == s.is_head, rid
        assert info.is_base == s.is_base, rid
    # newest first: every revision comes before its down revisions
    position = {r.revision: i for i, r in enumerate(history.revisions)}
    for info in history.revisions:
        for down in info.down_revisions:
            assert position[down] > position[info.revision]
    return history


def test_linear_chain(tmp_path):
    history = assert_same_as_alembic(make_env(tmp_path, linear(12)))
    assert [r.revision for r in history.revisions][:2] == ["r011", "r010"]
    assert history.heads == ("r011",)
    assert [r.revision for r in history.pending(["r009"])] == ["r010", "r011"]
    assert history.applied(["r002"]) == {"r000", "r001", "r002"}


def test_branches_merge_depends_on_and_label(tmp_path):
    history = assert_same_as_alembic(make_env(tmp_path, branched()))
    assert history.by_id["a2"].is_branch_point
    assert history.by_id["m1"].is_merge_point
    assert history.by_id["c1"].depends_on == ("b1",)
    assert history.by_id["x1"].branch_labels == ("extra",)
    # pending from a2 follows Alembic's upgrade order (dependencies first)
    pending = [r.revision for r in history.pending(["a2"])]
    script = ScriptDirectory.from_config(Config(str(tmp_path / "alembic.ini")))
    expected = [s.revision for s in reversed(list(
        script.revision_map.iterate_revisions("heads", ("a2",), implicit_base=True)))]
    assert pending == expected
    assert pending.index("b1") < pending.index("c1") < pending.index("m1")
    assert "c1" in history.applied(["c1"]) and "b1" in history.applied(["c1"])


def test_multiple_heads(tmp_path):
    revs = [Rev("a", None), Rev("b", "a"), Rev("c", "a")]
    history = assert_same_as_alembic(make_env(tmp_path, revs))
    assert set(history.heads) == {"b", "c"}


def test_demo_environment_matches_alembic():
    ini = DEMO_TARGETS_FILE.parent / "demo" / "alembic.ini"
    history = assert_same_as_alembic(ini)
    assert len(history.revisions) >= 10
    assert any(r.is_branch_point for r in history.revisions)
    assert any(r.is_merge_point for r in history.revisions)
    assert any(r.depends_on for r in history.revisions)
    assert any(r.branch_labels for r in history.revisions)


def test_empty_directory(tmp_path):
    history = HistoryCache().get(target_for(make_env(tmp_path, [])))
    assert history.revisions == [] and history.heads == ()


def test_syntax_error_names_the_file(tmp_path):
    ini = make_env(tmp_path, linear(3))
    (tmp_path / "versions" / "broken_rev.py").write_text("revision = 'x'\ndef upgrade(:\n")
    with pytest.raises(HistoryError, match=r"broken_rev\.py, line 2: syntax error"):
        HistoryCache().get(target_for(ini))


def test_import_error_does_not_break_history(tmp_path):
    """The dashboard never imports revision files to read history."""
    revs = linear(3)
    revs[1].extra_source = "import a_module_that_does_not_exist\n"
    history = HistoryCache().get(target_for(make_env(tmp_path, revs)))
    assert len(history.revisions) == 3


def test_missing_down_revision_is_reported(tmp_path):
    ini = make_env(tmp_path, [Rev("a", None), Rev("b", "zzz")])
    with pytest.raises(HistoryError, match="zzz"):
        HistoryCache().get(target_for(ini))


def test_cache_refreshes_on_add_change_remove(tmp_path):
    ini = make_env(tmp_path, linear(3))
    cache, target = HistoryCache(), target_for(ini)
    first = cache.get(target)
    assert cache.get(target) is first  # unchanged files: same object
    added = write_revision(tmp_path, Rev("r003", "r002"))
    second = cache.get(target)
    assert second is not first and second.heads == ("r003",)
    time.sleep(0.01)
    write_revision(tmp_path, Rev("r003", "r002", message="renamed message"))
    os.utime(added, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cache.get(target).by_id["r003"].message == "renamed message"
    added.unlink()
    assert cache.get(target).heads == ("r002",)


def test_multiple_and_recursive_version_locations(tmp_path):
    revs = [Rev("a", None), Rev("b", "a", subdir="more"), Rev("c", "b", subdir="more/deep")]
    ini = make_env(tmp_path, revs, ini_extra=(
        f"version_locations = %(here)s/versions{os.pathsep}%(here)s/more\n"
        "recursive_version_locations = true"))
    location, locations, recursive = script_directory_paths(target_for(ini))
    assert recursive and len(locations) == 2
    history = assert_same_as_alembic(ini)
    assert history.heads == ("c",)


def test_history_without_target_object(tmp_path):
    make_env(tmp_path, linear(2))
    history = build_history(tmp_path, [tmp_path / "versions"])
    assert history.heads == ("r001",)


def test_thousand_revisions_with_branches_merges_depends_on_and_labels(tmp_path):
    """The 1,000-revision environment of bench/history.py, read from source,
    equals Alembic's ScriptDirectory (revisions, edges, heads, bases, markers)."""
    import importlib.util

    from webapp import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("bench_history",
                                                  PROJECT_ROOT / "bench" / "history.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    graph = bench.build_graph()
    history = assert_same_as_alembic(make_env(tmp_path, graph.revs))
    assert len(history.revisions) == 1000
    assert sum(r.is_merge_point for r in history.revisions) == graph.merges > 10
    assert any(r.depends_on for r in history.revisions)
    assert any(r.branch_labels for r in history.revisions)
    # the script's profile names the dashboard's functions: each must still exist
    assert all(callable(fn) for _label, fn in bench.tracked_functions())


def test_non_literal_identifiers_use_the_target_side_loader(tmp_path):
    """A file that computes its down_revision is read by running it in the
    target's process; the rest still comes from source."""
    revs = linear(3)
    ini = make_env(tmp_path, revs)
    path = tmp_path / "versions" / "r002_rev.py"
    path.write_text(path.read_text().replace("down_revision: Union[str, Sequence[str], None] "
                                             "= 'r001'", "down_revision = 'r0' + '01'"))
    with pytest.raises(HistoryError, match="not a literal"):
        HistoryCache().get(target_for(ini))
    from webapp.core.runner import load_identifiers

    target = target_for(ini)
    cache = HistoryCache(loader_for=lambda t: (lambda paths: load_identifiers(t, paths)))
    history = cache.get(target)
    assert history.by_id["r002"].down_revisions == ("r001",)
    assert history.heads == ("r002",)
    assert_same_as_alembic(ini, cache)
