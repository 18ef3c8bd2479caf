"""The dashboard's pictures: the layered layout (layers, untangled orders, skipped layers
bent around nodes, cycles survived, big graphs placed), SVG with every name escaped, and charts
with round ticks that skip what cannot be drawn."""

from __future__ import annotations

import random

from cairn.server.dashboard.charts import Series, fmt, line_chart, nice_ticks
from cairn.server.dashboard.layout import layer_of, layout
from cairn.server.dashboard.svg import Node, condense, graph_svg
from cairn.workflow import outline

TRAIL = {  # the integration trail's DAG: step → what it reads
    "corpus": [],
    "model": ["corpus"],
    "chat": ["model"],
    "aligned": ["chat"],
    "scores": ["aligned"],
    "endpoint": ["aligned"],
    "publish": ["aligned", "scores"],
}


def edges_of(graph: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(up, name) for name, ups in graph.items() for up in ups]


def crossings(placed, edges) -> int:  # type: ignore[no-untyped-def]
    """Crossings between edges that join the same two adjacent layers."""
    segments = []
    for _, _, points in placed.paths:
        segments += list(zip(points, points[1:], strict=False))
    count = 0
    for i, ((la, ra), (_, rb)) in enumerate(segments):
        for (lc, rc), (_, rd) in segments[i + 1 :]:
            if la == lc and (ra - rc) * (rb - rd) < 0:
                count += 1
    return count


def test_layers_are_longest_paths_and_sources_sit_by_their_reader() -> None:
    layer = layer_of(list(TRAIL), edges_of(TRAIL))
    assert layer == {
        "corpus": 0, "model": 1, "chat": 2, "aligned": 3, "scores": 4, "endpoint": 4, "publish": 5,
    }  # fmt: skip
    # A raw source read only at the end is drawn next to its reader, not at the far left.
    late = layer_of(["a", "b", "c", "raw"], [("a", "b"), ("b", "c"), ("raw", "c")])
    assert late["raw"] == 1


def test_an_edge_that_skips_layers_bends_around_the_nodes_it_passes() -> None:
    placed = layout(list(TRAIL), edges_of(TRAIL))
    skip = next(p for p in placed.paths if p[:2] == ("aligned", "publish"))[2]
    assert [layer for layer, _ in skip] == [3, 4, 5]
    rows_in_layer_4 = {placed.at["scores"][1], placed.at["endpoint"][1]}
    assert skip[1][1] not in rows_in_layer_4
    assert len(set(placed.at.values())) == len(TRAIL)  # no two boxes in one place
    assert crossings(placed, edges_of(TRAIL)) == 0


def test_the_barycentre_sweeps_untangle_a_crossing() -> None:
    edges = [("a1", "b2"), ("a2", "b1"), ("b1", "c1"), ("b2", "c2")]
    placed = layout(["a1", "a2", "b1", "b2", "c1", "c2"], edges)
    assert crossings(placed, edges) == 0


def test_a_cycle_or_a_dangling_edge_is_survived() -> None:
    placed = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a"), ("a", "zz"), ("b", "b")])
    assert set(placed.at) == {"a", "b", "c"}
    assert len(placed.paths) == 3  # the self-loop and the edge to an unknown node are dropped
    assert layout([], []).at == {}


def test_a_thousand_artifact_lineage_is_placed_whole() -> None:
    rng = random.Random(7)
    sources = [f"raw{i}" for i in range(800)]
    made = [f"a{i}" for i in range(200)]
    edges = [(s, made[rng.randrange(0, 50)]) for s in sources]
    edges += [(made[rng.randrange(0, i)], made[i]) for i in range(1, 200) for _ in range(2)]
    placed = layout(sources + made, edges)
    assert len(placed.at) == 1000 and len(set(placed.at.values())) == 1000
    assert all(path[2][0][0] < path[2][-1][0] for path in placed.paths)  # left to right
    svg = graph_svg([Node(n, n) for n in sources + made], edges, "big")
    assert svg.count("<rect") == 1000 and len(svg) < 600_000  # lean: well under 1 KB a box


def test_svg_escapes_every_name_and_links_each_box() -> None:
    hostile = '<script>alert("x")</script>'
    svg = graph_svg(
        [Node("a", hostile, sub=hostile, css='s-x" onload="evil', href='/ui/a?x="1"', title=hostile),
         Node("b", "b")],
        [("a", "b")],
        label=hostile,
    )  # fmt: skip
    assert "<script>" not in svg and 'onload="evil' not in svg and '"1"' not in svg
    assert "&lt;script&gt;" in svg and 'href="/ui/a?x=&#34;1&#34;"' in svg
    assert svg.count("<a href=") == 1  # b has no page to link to


def test_the_outline_of_a_recorded_workflow() -> None:
    text = """
name: wf
steps:
  corpus: {kind: curate, inputs: {sources: [./data, s3://bucket/x.jsonl]}}
  model: {kind: pretrain, inputs: {dataset: corpus.dataset}}
  publish: {kind: release, inputs: {model: model.model, evals: [model.model, ../e.v]}}
"""
    assert outline(text) == [
        {"step": "corpus", "kind": "curate", "after": []},
        {"step": "model", "kind": "pretrain", "after": ["corpus"]},
        {"step": "publish", "kind": "release", "after": ["model"]},
    ]
    assert outline("steps: [1, 2") == []
    assert outline("- a list") == []
    assert outline("steps: {a: 3, b: {inputs: [x.y]}}") == [
        {"step": "a", "kind": "", "after": []},
        {"step": "b", "kind": "", "after": []},
    ]


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    ticks = nice_ticks(3.2, 5.9)
    assert ticks[0] >= 3.2 and ticks[-1] <= 5.9 and len(ticks) >= 3
    assert nice_ticks(2, 2) == [2] and nice_ticks(float("nan"), 1) == []
    assert [fmt(v) for v in (0, 0.5, 1500, 15000, 2.5e6, 3e9, 0.0001)] == [
        "0", "0.5", "1500", "15k", "2.5M", "3G", "0.0001",
    ]  # fmt: skip


def test_charts_draw_each_series_and_skip_what_cannot_be_drawn() -> None:
    nan = float("nan")
    two = line_chart(
        "<b>loss</b>", [Series("a", [(0, 2.0), (1, 1.0), (2, nan)]), Series("b", [(0, 3.0)])]
    )
    assert two.count("<polyline") == 1 and two.count("<circle") == 1  # b has one point
    assert "&lt;b&gt;loss&lt;/b&gt;" in two and "<b>" not in two
    assert 'class="legend"' in two
    assert line_chart("empty", [Series("a", [(0, nan)])]) == ""
    long = line_chart("long", [Series("a", [(i, float(i)) for i in range(10_000)])])
    assert long.count(" ") < 2_000  # thinned: a point per pixel is plenty


def test_a_crowded_layer_is_condensed_into_one_more_box() -> None:
    nodes = [Node(f"raw{i}", f"raw{i}", sub="raw source · x") for i in range(100)]
    nodes += [Node("data", "data"), Node("model", "model")]
    edges = [(f"raw{i}", "data") for i in range(100)] + [("raw0", "model"), ("data", "model")]
    kept, moved = condense(nodes, edges, limit=40)
    assert len(kept) == 42 and [n.id for n in kept[:3]] == ["raw0", "raw1", "raw2"]
    more = next(n for n in kept if n.label == "+ 61 more")
    assert more.sub == "raw source" and more.href is None
    assert moved.count((more.id, "data")) == 1  # 61 edges became one
    assert len(moved) == 39 + 1 + 2
    small = condense(nodes[:10] + nodes[100:], edges, limit=40)
    assert small[0] == nodes[:10] + nodes[100:]
