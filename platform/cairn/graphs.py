"""Lineage graphs as text people and tools read: Graphviz dot and Mermaid.

Both `cairn lineage --format dot|mermaid` (from Cairn's database) and the release's model card
(from `lineage.json`) draw the same flat shape: nodes {digest, type, kind, step, uri, run_id} and
edges {parent, child, slot}. `flatten` turns the nested tree of `cairn.report.lineage` into it.
"""

from __future__ import annotations

from typing import Any


def flatten(tree: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(nodes, edges) of a nested lineage tree, each node once."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def visit(n: dict[str, Any]) -> None:
        first = n["digest"] not in nodes
        nodes.setdefault(n["digest"], {k: v for k, v in n.items() if k != "parents"})
        if not first:
            return
        for p in n.get("parents", []):
            edges.append({"parent": p["digest"], "child": n["digest"], "slot": p.get("slot", "")})
            visit(p)

    visit(tree)
    return list(nodes.values()), edges


def label(n: dict[str, Any]) -> str:
    """`step (kind) type digest12`, or `source path digest12` for raw data."""
    if n.get("step"):
        return f"{n['step']} ({n.get('kind')})\\n{n['type']} {n['digest'][:12]}"
    uri = str(n.get("uri") or "")
    return f"source {uri.rstrip('/').rsplit('/', 1)[-1]}\\n{n['digest'][:12]}"


def to_dot(nodes: list[dict[str, Any]], edges: list[dict[str, str]]) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    for n in nodes:
        shape = ", shape=folder" if n["type"] == "raw" else ""
        text = label(n).replace('"', "'")
        lines.append(f'  "{n["digest"][:12]}" [label="{text}"{shape}];')
    for e in edges:
        lines.append(f'  "{e["parent"][:12]}" -> "{e["child"][:12]}" [label="{e["slot"]}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(nodes: list[dict[str, Any]], edges: list[dict[str, str]]) -> str:
    lines = ["flowchart LR"]
    for n in nodes:
        text = label(n).replace("\\n", "<br/>").replace('"', "'")
        open_, close = ("[(", ")]") if n["type"] == "raw" else ("[", "]")
        lines.append(f'  n{n["digest"][:12]}{open_}"{text}"{close}')
    for e in edges:
        lines.append(f"  n{e['parent'][:12]} -->|{e['slot']}| n{e['child'][:12]}")
    return "\n".join(lines) + "\n"


def nest(nodes: list[dict[str, Any]], edges: list[dict[str, str]], root: str) -> dict[str, Any]:
    """The nested tree (as `cairn.report.lineage` returns it) of a flat graph, from `root`."""
    by_digest = {n["digest"]: n for n in nodes}
    parents: dict[str, list[dict[str, str]]] = {}
    for e in edges:
        parents.setdefault(e["child"], []).append(e)

    def build(digest: str, seen: frozenset[str]) -> dict[str, Any]:
        out = {**by_digest[digest], "parents": []}
        if digest in seen:
            return out
        for e in parents.get(digest, []):
            if e["parent"] in by_digest:
                out["parents"].append({"slot": e["slot"], **build(e["parent"], seen | {digest})})
        return out

    return build(root, frozenset())


def from_path(path: str) -> tuple[list[dict[str, Any]], list[dict[str, str]], str]:
    """(nodes, edges, root digest) of a release bundle (its lineage.json) or of an artifact
    directory (walked through its manifests)."""
    import hashlib
    import json
    from pathlib import Path

    from cairn import ancestry

    p = Path(path)
    if (p / "lineage.json").is_file():
        data = json.loads((p / "lineage.json").read_text())
        return data["nodes"], data["edges"], data["release"]["model"]
    digest = hashlib.sha256((p / "manifest.json").read_bytes()).hexdigest()
    walked = ancestry.walk([(str(p), digest)])
    nodes = [
        {
            "digest": n.digest,
            "type": n.type,
            "kind": n.manifest.get("kind"),
            "step": n.manifest.get("step"),
            "uri": n.manifest.get("source", n.uri),
            "run_id": (n.manifest.get("producer") or {}).get("run_id"),
        }
        for n in ancestry.topological(walked)
    ]
    return nodes, ancestry.edges(walked), digest
