"""Lineage graphs in the two shapes people read: a nested tree and a flat {nodes, edges} graph.

`cairn lineage` draws the flat shape as Graphviz dot or Mermaid (`cairn.stage.lineage`, which the
release's model card draws with too): nodes {digest, type, kind, step, uri, run_id} and edges
{parent, child, slot}. `flatten` turns a nested tree (`LineageNode.to_dict()`) into it, `nest` the
other way, and `from_path` reads it from a release bundle or an artifact directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cairn.artifacts import ancestry
from cairn.stage.files import artifact_digest
from cairn.stage.lineage import to_dot, to_mermaid


def flatten(tree: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(nodes, edges) of a nested lineage tree, each node once."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def visit(n: dict[str, Any]) -> None:
        first = n["digest"] not in nodes
        # A slot is how a node fed one child (an edge's), not part of the node: an artifact
        # reached along two paths may have fed them through different slots.
        nodes.setdefault(n["digest"], {k: v for k, v in n.items() if k not in ("parents", "slot")})
        if not first:
            return
        for p in n.get("parents", []):
            edges.append({"parent": p["digest"], "child": n["digest"], "slot": p.get("slot", "")})
            visit(p)

    visit(tree)
    return list(nodes.values()), edges


def nest(nodes: list[dict[str, Any]], edges: list[dict[str, str]], root: str) -> dict[str, Any]:
    """The nested tree (`LineageNode.to_dict()`'s shape) of a flat graph, from `root`."""
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
    p = Path(path)
    if (p / "lineage.json").is_file():
        data = json.loads((p / "lineage.json").read_text())
        return data["nodes"], data["edges"], data["release"]["model"]
    digest = artifact_digest((p / "manifest.json").read_bytes())
    walked = ancestry.walk([(str(p), digest)])
    nodes = [
        {
            "digest": n.digest,
            "type": n.type,
            "kind": n.manifest.get("kind"),
            "step": n.manifest.get("step"),
            "uri": n.manifest.get("source", n.uri),
            "run_id": (n.manifest.get("producer") or {}).get("run_id"),
            **({"license": n.manifest["license"]} if n.manifest.get("license") else {}),
        }
        for n in walked.topological()
    ]
    return nodes, walked.edges(), digest


__all__ = ["flatten", "from_path", "nest", "to_dot", "to_mermaid"]
