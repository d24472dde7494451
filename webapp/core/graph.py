"""Lane layout of a revision graph, drawn like ``git log --graph``.

Pure logic: takes revisions newest first (children before parents) and
returns, per row, the lane of the revision's node and the line segments
that cross the gap to the next row. :func:`row_svg` turns one row into an
inline SVG; rows of a table line up because every row has the same height.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape

ROW_HEIGHT = 28  # px; must match the CSS row height of the history table
LANE_WIDTH = 14  # px between lanes
MARGIN = 9  # px left of lane 0
PALETTE = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626")


@dataclass
class GraphRow:
    """Drawing data of one row.

    ``node_lane`` is where the revision's dot sits; ``edges_in``/``edges_out``
    are (from_lane, to_lane) pairs for the gap above/below this row.
    """

    revision: str
    node_lane: int
    edges_in: list[tuple[int, int]] = field(default_factory=list)
    edges_out: list[tuple[int, int]] = field(default_factory=list)
    #: ``depends_on`` segments (x1 lane, y1, x2 lane, y2), y as a fraction of
    #: the row height; drawn dashed (see :func:`add_dependencies`)
    depends: list[tuple[float, float, float, float]] = field(default_factory=list)


@dataclass
class GraphLayout:
    """All rows plus the number of lanes (the SVG width follows from it)."""

    rows: list[GraphRow]
    lane_count: int

    @property
    def width(self) -> int:
        """Width in px of every row's SVG."""
        return MARGIN * 2 + max(self.lane_count - 1, 0) * LANE_WIDTH


def layout(revisions: Sequence[tuple[str, Sequence[str]]]) -> GraphLayout:
    """Assign lanes.

    :param revisions: (revision id, down revision ids) newest first; every
        revision must come before its down revisions. Down revisions not in
        the sequence are ignored.
    :return: a :class:`GraphLayout` with one row per revision, same order.
    """
    known = {rid for rid, _ in revisions}
    lanes: list[str | None] = []  # what each lane waits for
    origin: list[int] = []  # lane at the previous row where each lane's line starts
    rows: list[GraphRow] = []
    max_lanes = 1
    for rid, downs in revisions:
        waiting = [i for i, want in enumerate(lanes) if want == rid]
        if waiting:
            node = waiting[0]
        else:
            node = lanes.index(None) if None in lanes else len(lanes)
            if node == len(lanes):
                lanes.append(None)
                origin.append(node)
        row = GraphRow(rid, node)
        if rows:
            for i, want in enumerate(lanes):
                if want is None:
                    continue
                edge = (origin[i], node if want == rid else i)
                row.edges_in.append(edge)
                rows[-1].edges_out.append(edge)
        for i in waiting[1:]:
            lanes[i] = None
        parents = [d for d in downs if d in known]
        origin = list(range(len(lanes)))
        if not parents:
            lanes[node] = None
        else:
            lanes[node] = parents[0]
            for parent in parents[1:]:
                slot = lanes.index(None) if None in lanes else len(lanes)
                if slot == len(lanes):
                    lanes.append(parent)
                    origin.append(node)
                else:
                    lanes[slot] = parent
                    origin[slot] = node
        while lanes and lanes[-1] is None:
            lanes.pop()
            origin.pop()
        max_lanes = max(max_lanes, len(lanes), node + 1)
        rows.append(row)
    return GraphLayout(rows, max_lanes)


def add_dependencies(graph: GraphLayout, depends_on: Mapping[str, Sequence[str]]) -> None:
    """Add ``depends_on`` edges to ``graph`` as dashed segments, each in a lane
    of its own right of the revision lanes (reused once an edge has ended).

    :param depends_on: revision id -> the revision ids it depends on (above
        or below it in the graph); ids not in the graph are ignored.
    """
    index = {row.revision: i for i, row in enumerate(graph.rows)}
    spans = sorted({(min(i, index[dep]), max(i, index[dep]))
                    for i, row in enumerate(graph.rows)
                    for dep in depends_on.get(row.revision, ())
                    if dep in index and index[dep] != i})
    ends: list[int] = []  # last row used by each dependency lane
    for start, end in spans:
        slot = next((k for k, last in enumerate(ends) if last < start), len(ends))
        if slot == len(ends):
            ends.append(end)
        ends[slot] = end
        lane = graph.lane_count + slot
        rows = graph.rows
        rows[start].depends.append((rows[start].node_lane, 0.5, lane, 1.0))
        for between in range(start + 1, end):
            rows[between].depends.append((lane, 0.0, lane, 1.0))
        rows[end].depends.append((lane, 0.0, rows[end].node_lane, 0.5))
    graph.lane_count += len(ends)


def _x(lane: float) -> float:
    return MARGIN + lane * LANE_WIDTH


def row_svg(row: GraphRow, width: int, *, title: str = "", marker: str = "") -> str:
    """Render one row as an inline SVG string (safe HTML).

    :param marker: "head", "base", "current" etc. (space-separated) — CSS
        classes of the dot; a "current" dot also gets a ring.
    """
    half = ROW_HEIGHT / 2
    parts = [f'<svg class="graph" width="{width}" height="{ROW_HEIGHT}" '
             f'viewBox="0 0 {width} {ROW_HEIGHT}" aria-hidden="true">']
    for a, b in row.edges_in:
        parts.append(f'<line x1="{_x((a + b) / 2):g}" y1="0" x2="{_x(b):g}" y2="{half:g}" '
                     f'stroke="{PALETTE[b % len(PALETTE)]}"/>')
    for a, b in row.edges_out:
        parts.append(f'<line x1="{_x(a):g}" y1="{half:g}" x2="{_x((a + b) / 2):g}" '
                     f'y2="{ROW_HEIGHT}" stroke="{PALETTE[b % len(PALETTE)]}"/>')
    for x1, y1, x2, y2 in row.depends:
        parts.append(f'<line class="depends" x1="{_x(x1):g}" y1="{y1 * ROW_HEIGHT:g}" '
                     f'x2="{_x(x2):g}" y2="{y2 * ROW_HEIGHT:g}" stroke="#64748b"/>')
    cls = f"node {escape(marker)}".strip()
    parts.append(f'<circle class="{cls}" cx="{_x(row.node_lane):g}" cy="{half:g}" r="4.5" '
                 f'fill="{PALETTE[row.node_lane % len(PALETTE)]}">'
                 f'<title>{escape(title)}</title></circle>')
    if "current" in marker.split():
        parts.append(f'<circle class="current-ring" cx="{_x(row.node_lane):g}" cy="{half:g}" '
                     'r="7.5"/>')
    parts.append("</svg>")
    return "".join(parts)
