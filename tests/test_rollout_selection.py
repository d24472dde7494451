"""Which targets a rollout selects and in which waves (pure logic), and the
targets file's ``tags`` key."""

from __future__ import annotations

import pytest
from support.envtools import linear, make_env

from webapp.core.rollouts import Selection, SelectionError, select, waves
from webapp.core.targets import Target, TargetsFileError, load_targets


def t(name: str, tier: str, *tags: str) -> Target:
    return Target(name=name, label=name, tier=tier, alembic_ini=None, tags=tags)


FLEET = [t("p1", "production", "eu", "tenant"), t("s1", "staging", "eu"),
         t("p2", "production", "us", "tenant"), t("d1", "development"),
         t("p3", "production", "tenant"), t("s2", "staging", "us")]


def names(targets) -> list[str]:
    return [x.name for x in targets]


def test_filters_combine_and_keep_file_order():
    assert names(select(FLEET, Selection(tags=("eu",)))) == ["p1", "s1"]
    assert names(select(FLEET, Selection(tags=("eu", "us")))) == ["p1", "s1", "p2", "s2"]
    assert names(select(FLEET, Selection(tiers=("production",), tags=("tenant",)))) == [
        "p1", "p2", "p3"]
    assert names(select(FLEET, Selection(names=("s2", "p1"), tags=("eu",)))) == ["p1"]
    assert names(select(FLEET, Selection(tiers=("staging", "development")))) == [
        "s1", "d1", "s2"]


@pytest.mark.parametrize("selection, message", [
    (Selection(), "select targets"),
    (Selection(tiers=("prod",)), "unknown tier"),
    (Selection(names=("p1", "zz")), "no target called zz"),
    (Selection(tags=("asia",)), "matches no target"),
])
def test_unusable_selections_say_why(selection, message):
    with pytest.raises(SelectionError, match=message):
        select(FLEET, selection)


def test_waves_go_by_tier_then_batches():
    assert [names(w) for w in waves(FLEET)] == [["d1"], ["s1", "s2"], ["p1", "p2", "p3"]]
    assert [names(w) for w in waves(FLEET, 2)] == [["d1"], ["s1", "s2"], ["p1", "p2"],
                                                    ["p3"]]
    assert [names(w) for w in waves(FLEET[:1], 5)] == [["p1"]]
    with pytest.raises(SelectionError):
        waves(FLEET, 0)


def test_targets_file_tags(tmp_path):
    make_env(tmp_path / "env", linear(1))
    path = tmp_path / "targets.toml"
    path.write_text('[targets.a]\ntier = "staging"\nalembic_ini = "env/alembic.ini"\n'
                    'url_env = "A_URL"\ntags = ["eu", "tenant", "eu"]\n'
                    '[targets.b]\ntier = "staging"\nalembic_ini = "env/alembic.ini"\n'
                    'url_env = "B_URL"\n')
    targets = load_targets(path)
    assert targets["a"].tags == ("eu", "tenant") and targets["b"].tags == ()
    path.write_text('[targets.a]\ntier = "staging"\nalembic_ini = "env/alembic.ini"\n'
                    'url_env = "A_URL"\ntags = "eu"\n')
    with pytest.raises(TargetsFileError, match=r"line 5, key targets.a.tags: must be a list"):
        load_targets(path)
