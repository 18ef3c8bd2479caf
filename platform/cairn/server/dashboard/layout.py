"""Where each node of a DAG goes: a layered ("Sugiyama") layout, in plain Python.

The run page draws a workflow's steps and the artifact pages draw lineage, which can reach
thousands of artifacts, so every phase is near-linear: layers by longest path (one pass in
topological order), edges that skip layers broken into chains of virtual points (so they bend
around the nodes they pass instead of crossing them), then a few sweeps that sort each layer by
the barycentre of its neighbours (O(n log n) each). Exact crossing minimisation is NP-hard and
not worth it for a picture: four sweeps untangle what a person would notice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

SWEEPS = 4


@dataclass(frozen=True)
class _Virtual:
    """A point where an edge crosses a layer it skips (never a node of the graph)."""

    edge: int
    layer: int


@dataclass
class Layout:
    """Positions in slots: node → (layer, row), and each edge as the rows it passes through
    from its parent's layer to its child's (one row per layer, virtual points included)."""

    layers: int
    rows: int  # the most rows any layer holds
    at: dict[Hashable, tuple[int, float]] = field(default_factory=dict)
    paths: list[tuple[Hashable, Hashable, list[tuple[int, float]]]] = field(default_factory=list)


def layer_of(
    nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]]
) -> dict[Hashable, int]:
    """Each node's layer: the longest path from a root to it, in edges. A root that feeds
    something is pulled right up to the layer before its first consumer (a raw source sits next
    to the step that read it, not at the far left). Edges that would close a cycle are ignored."""
    children: dict[Hashable, list[Hashable]] = defaultdict(list)
    indegree = dict.fromkeys(nodes, 0)
    for parent, child in edges:
        if parent in indegree and child in indegree and parent != child:
            children[parent].append(child)
            indegree[child] += 1
    layer = dict.fromkeys(nodes, 0)
    ready = [n for n in nodes if indegree[n] == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for c in children[n]:
            layer[c] = max(layer[c], layer[n] + 1)
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if seen < len(indegree):  # a cycle: place what is left after everything else, in order
        last = max(layer.values(), default=0)
        for n in nodes:
            if indegree[n] > 0:
                last += 1
                layer[n] = last
    has_parent = {c for p, c in edges if p != c}
    for n in nodes:
        if n not in has_parent and children[n]:
            layer[n] = max(layer[n], min(layer[c] for c in children[n]) - 1)
    return layer


def layout(nodes: Sequence[Hashable], edges: Sequence[tuple[Hashable, Hashable]]) -> Layout:
    """The layered layout of a DAG whose `edges` run (parent, child); parents to the left."""
    nodes = list(dict.fromkeys(nodes))
    known = set(nodes)
    edges = [(p, c) for p, c in dict.fromkeys(edges) if p in known and c in known and p != c]
    layer = layer_of(nodes, edges)
    if not nodes:
        return Layout(0, 0)
    width = max(layer.values()) + 1
    order: list[list[Hashable]] = [[] for _ in range(width)]
    for n in nodes:
        order[layer[n]].append(n)

    # Every edge becomes a chain of unit-length segments through virtual points.
    up: dict[Hashable, list[Hashable]] = defaultdict(list)
    down: dict[Hashable, list[Hashable]] = defaultdict(list)
    chains: list[tuple[Hashable, Hashable, list[Hashable]]] = []
    for i, (p, c) in enumerate(edges):
        lo, hi = sorted((layer[p], layer[c]))
        chain: list[Hashable] = [p]
        for k in range(lo + 1, hi):
            virtual = _Virtual(i, k)
            order[k].append(virtual)
            chain.append(virtual)
        chain.append(c)
        if layer[p] > layer[c]:  # a back edge of a cycle: drawn right to left
            chain.reverse()
        for a, b in zip(chain, chain[1:], strict=False):
            down[a].append(b)
            up[b].append(a)
        chains.append((p, c, chain))

    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        indices = range(1, width) if forward else range(width - 2, -1, -1)
        for k in indices:
            near = order[k - 1] if forward else order[k + 1]
            pos = {n: i for i, n in enumerate(near)}
            links = up if forward else down
            current = {n: i for i, n in enumerate(order[k])}

            def barycentre(n: Hashable, links=links, pos=pos, current=current) -> float:
                ns = [pos[m] for m in links[n] if m in pos]
                return sum(ns) / len(ns) if ns else float(current[n])

            order[k].sort(key=barycentre)

    rows = max(len(o) for o in order)
    out = Layout(width, rows)
    offset = [(rows - len(o)) / 2 for o in order]  # each layer centred on the tallest
    for k, o in enumerate(order):
        for i, n in enumerate(o):
            out.at[n] = (k, i + offset[k])
    for p, c, chain in chains:
        out.paths.append((p, c, [out.at[n] for n in chain]))
    out.at = {n: xy for n, xy in out.at.items() if not isinstance(n, _Virtual)}
    return out
