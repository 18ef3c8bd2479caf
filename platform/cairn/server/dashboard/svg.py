"""DAGs as SVG, drawn on the server: a run's steps and an artifact's lineage.

The picture is plain markup the browser shows at once: no graph library, no script, nothing
fetched. Colours come from CSS classes (`s-running`, `t-source`, ...), so the stylesheet holds
the palette and the SVG stays lean (a lineage of 1,000 artifacts is a few hundred KB). Every name
and label is escaped here: workflow and step names come from whoever wrote the workflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from cairn.server.dashboard.layout import layer_of, layout

NODE_W, NODE_H = 146, 40
GAP_X, ROW_H, PAD = 34, 54, 8
LABEL_CHARS = 20  # what fits in NODE_W at the stylesheet's 12 px
# Up to this width a picture shrinks to fit the page (text stays readable, ≥ 80 %); a wider
# one keeps its size and scrolls.
FIT_WIDTH = 1500


@dataclass(frozen=True)
class Node:
    """One box: its id (what edges name), two lines of text, CSS classes, a link and a
    tooltip (the full, untruncated text)."""

    id: str
    label: str
    sub: str = ""
    css: str = ""
    href: str | None = None
    title: str = ""


def clip(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def condense(
    nodes: Sequence[Node], edges: Sequence[tuple[str, str]], limit: int = 40
) -> tuple[list[Node], list[tuple[str, str]]]:
    """At most `limit` boxes in a layer: the first `limit - 1` (in the order given, nearest
    first for a lineage) and one "+N more" box standing for the rest, their edges moved to it.
    A lineage may read 800 raw files; a picture 43,000 pixels tall shows nothing to anyone."""
    layer = layer_of([n.id for n in nodes], list(edges))
    seen: dict[int, int] = {}
    moved: dict[str, str] = {}
    hidden: dict[int, list[Node]] = {}
    kept = []
    for n in nodes:
        k = layer[n.id]
        seen[k] = seen.get(k, 0) + 1
        if seen[k] < limit:
            kept.append(n)
        else:
            hidden.setdefault(k, []).append(n)
    for k, group in hidden.items():
        if len(group) == 1:  # one more box is no worse than a box saying so
            kept.append(group[0])
            continue
        more = f"·more-{k}"
        subs = {n.sub.split(" · ")[0] for n in group}
        kept.append(
            Node(more, f"+ {len(group)} more", sub=subs.pop() if len(subs) == 1 else "", css="more")
        )
        moved.update((n.id, more) for n in group)
    out = list(dict.fromkeys((moved.get(p, p), moved.get(c, c)) for p, c in edges))
    return kept, out


def graph_svg(
    nodes: Sequence[Node], edges: Sequence[tuple[str, str]], label: str, ident: str = "dag"
) -> Markup:
    """`nodes` laid out in layers left to right, `edges` (parent id, child id) as curves with
    arrowheads. `label` names the picture for screen readers; `ident` keeps the arrowhead's id
    unique when a page holds several pictures."""
    placed = layout([n.id for n in nodes], list(edges))
    if not nodes:
        return Markup("")

    def x(layer: float) -> float:
        return PAD + layer * (NODE_W + GAP_X)

    def y(row: float) -> float:
        return PAD + row * ROW_H

    width = PAD * 2 + placed.layers * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + placed.rows * ROW_H - (ROW_H - NODE_H)
    css = "dag wide" if width > FIT_WIDTH else "dag"
    out = [
        f'<svg class="{css}" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="{escape(label)}">'
        f'<defs><marker id="{ident}-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z"/></marker></defs><g class="edges">'
    ]
    for _, _, points in placed.paths:
        out.append(f'<path d="{_curve(points, x, y)}" marker-end="url(#{ident}-arrow)"/>')
    out.append("</g>")
    for n in nodes:
        layer, row = placed.at[n.id]
        nx, ny = x(layer), y(row)
        box = (
            f'<g class="node {escape(n.css)}"><title>{escape(n.title or n.label)}</title>'
            f'<rect x="{nx:.0f}" y="{ny:.0f}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
            f'<text x="{nx + 10:.0f}" y="{ny + 17:.0f}" class="label">{escape(clip(n.label))}'
            f'</text><text x="{nx + 10:.0f}" y="{ny + 32:.0f}" class="sub">'
            f"{escape(clip(n.sub, LABEL_CHARS + 4))}</text></g>"
        )
        out.append(f'<a href="{escape(n.href)}">{box}</a>' if n.href else box)
    out.append("</svg>")
    return Markup("".join(out))


def _curve(points: list[tuple[int, float]], x, y) -> str:  # type: ignore[no-untyped-def]
    """An edge leaves its parent's right side, crosses each skipped layer straight through its
    virtual point, and enters its child's left side; between layers it is an S-curve."""
    mid = NODE_H / 2
    (l0, r0), rest = points[0], points[1:]
    px, py = x(l0) + NODE_W, y(r0) + mid
    d = [f"M{px:.0f},{py:.0f}"]
    for i, (layer, row) in enumerate(rest):
        qx, qy = x(layer), y(row) + mid
        bend = (qx - px) / 2
        d.append(f"C{px + bend:.0f},{py:.0f} {qx - bend:.0f},{qy:.0f} {qx:.0f},{qy:.0f}")
        if i < len(rest) - 1:  # a virtual point: straight across the layer it skips
            px, py = qx + NODE_W, qy
            d.append(f"L{px:.0f},{py:.0f}")
    return "".join(d)
