"""Lane layout of the revision graph (pure logic, property-tested)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.core.graph import layout, row_svg


def test_linear_chain_uses_one_lane():
    revs = [("c", ["b"]), ("b", ["a"]), ("a", [])]
    graph = layout(revs)
    assert [r.node_lane for r in graph.rows] == [0, 0, 0]
    assert graph.rows[0].edges_out == [(0, 0)] and graph.rows[1].edges_in == [(0, 0)]
    assert graph.rows[2].edges_out == []


def test_branch_and_merge_use_two_lanes_and_rejoin():
    # m merges b2 and c1; both come from a
    revs = [("m", ["b2", "c1"]), ("b2", ["a"]), ("c1", ["a"]), ("a", [])]
    graph = layout(revs)
    assert graph.lane_count == 2
    lanes = {r.revision: r.node_lane for r in graph.rows}
    assert lanes["m"] == 0 and lanes["b2"] == 0 and lanes["c1"] == 1 and lanes["a"] == 0
    # the merge row opens a second line from its own node
    assert (0, 1) in graph.rows[0].edges_out
    # a's row receives both lines
    assert sorted(graph.rows[3].edges_in) == [(0, 0), (1, 0)]


def test_svg_is_escaped_markup():
    graph = layout([("<x>", [])])
    svg = row_svg(graph.rows[0], graph.width, title="<x>")
    assert "<x>" not in svg and "&lt;x&gt;" in svg and svg.startswith("<svg")


@st.composite
def dags(draw):
    n = draw(st.integers(1, 40))
    ids = [f"r{i}" for i in range(n)]  # r0 oldest
    parents = {}
    for i, rid in enumerate(ids):
        k = draw(st.integers(0, min(2, i)))
        parents[rid] = draw(st.lists(st.sampled_from(ids[:i]), min_size=k, max_size=k,
                                     unique=True)) if i else []
    return [(rid, parents[rid]) for rid in reversed(ids)]  # newest first


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_edge_is_drawn_between_its_rows(revs):
    """Following the drawn segments from a node's row downwards always reaches
    each of its parents' nodes: no edge is lost, none invented."""
    graph = layout(revs)
    index = {rid: i for i, (rid, _) in enumerate(revs)}
    for i, (rid, parents) in enumerate(revs):
        row = graph.rows[i]
        assert row.edges_in == (graph.rows[i - 1].edges_out if i else [])
        for parent in parents:
            # walk: start from any out-edge leaving this node's lane and follow lanes
            reached = False
            for a, b in row.edges_out:
                if a != row.node_lane:
                    continue
                lane, j = b, i + 1
                while j < len(revs):
                    if graph.rows[j].node_lane == lane and revs[j][0] == parent:
                        reached = True
                        break
                    nxt = [bb for aa, bb in graph.rows[j].edges_out if aa == lane]
                    if graph.rows[j].node_lane == lane or not nxt:
                        break
                    lane, j = nxt[0], j + 1
                if reached:
                    break
            assert reached, f"edge {rid} -> {parent} (row {index[parent]}) not drawn"


def test_depends_on_edge_is_a_dashed_line_in_its_own_lane():
    # x2 -> x1 is a separate branch; x2 depends_on b (on the main line, further down)
    revs = [("x2", ["x1"]), ("c", ["b"]), ("x1", []), ("b", ["a"]), ("a", [])]
    from webapp.core.graph import add_dependencies

    graph = layout(revs)
    lanes_before = graph.lane_count
    add_dependencies(graph, {"x2": ["b"], "c": ["nowhere"]})
    assert graph.lane_count == lanes_before + 1
    dep_lane = lanes_before
    rows = {r.revision: r for r in graph.rows}
    assert rows["x2"].depends == [(rows["x2"].node_lane, 0.5, dep_lane, 1.0)]
    assert rows["c"].depends == [(dep_lane, 0.0, dep_lane, 1.0)]
    assert rows["x1"].depends == [(dep_lane, 0.0, dep_lane, 1.0)]
    assert rows["b"].depends == [(dep_lane, 0.0, rows["b"].node_lane, 0.5)]
    assert rows["a"].depends == []
    svg = row_svg(rows["x2"], graph.width, marker="head current")
    assert svg.count('class="depends"') == 1 and 'class="current-ring"' in svg
    assert 'class="node head current"' in svg


def test_depends_on_lanes_are_reused_after_an_edge_ends():
    from webapp.core.graph import add_dependencies

    revs = [("d", ["c"]), ("c", ["b"]), ("b", ["a"]), ("a", [])]
    graph = layout(revs)
    add_dependencies(graph, {"d": ["c"], "b": ["a"]})  # disjoint spans share one lane
    assert graph.lane_count == 2


def test_depends_on_a_revision_drawn_above_is_drawn_too():
    from webapp.core.graph import add_dependencies

    # the demo's case: e (second base's branch) depends on m, listed above it
    revs = [("m", ["a"]), ("e", []), ("a", [])]
    graph = layout(revs)
    add_dependencies(graph, {"e": ["m"]})
    rows = {r.revision: r for r in graph.rows}
    lane = graph.lane_count - 1
    assert rows["m"].depends == [(rows["m"].node_lane, 0.5, lane, 1.0)]
    assert rows["e"].depends == [(lane, 0.0, rows["e"].node_lane, 0.5)]
