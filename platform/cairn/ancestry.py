"""Walking an artifact's ancestry from manifests alone, without Cairn's database.

Every sealed manifest names its parents by digest *and* URI, so the whole graph back to the raw
sources can be rebuilt from the artifact store: each parent's manifest is read where it lies and
must hash to the digest its child recorded; each raw source is re-digested where it lies and must
still match. The release stage copies this graph into its bundle (`lineage.json` + the verbatim
manifests) and `cairn audit` re-checks it there, so an auditor needs neither the store nor the
database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec

from cairn.errors import CairnError
from cairn.store import MANIFEST, canonical_json, describe_source


@dataclass(frozen=True)
class Node:
    """One artifact of the graph: its digest, where it lies and its manifest (bytes as sealed)."""

    digest: str
    uri: str
    manifest_bytes: bytes

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_bytes)

    @property
    def type(self) -> str:
        return str(self.manifest["type"])

    @property
    def parents(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("parents") or [])


def read_manifest(uri: str, digest: str) -> bytes:
    """The manifest bytes of the artifact at `uri`, checked against `digest`."""
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        with fs.open(f"{path.rstrip('/')}/{MANIFEST}", "rb") as f:
            data: bytes = f.read()
    except FileNotFoundError:
        raise CairnError(
            f"artifact {digest[:12]} is gone from {uri} (no {MANIFEST}); "
            "fix: re-run the workflow that made it (`cairn run` recomputes missing artifacts)"
        ) from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise CairnError(
            f"artifact at {uri} no longer has digest {digest[:12]}: its {MANIFEST} changed; "
            "fix: re-run the workflow so the artifact is recomputed"
        )
    return data


def walk(roots: Iterable[tuple[str, str]]) -> dict[str, Node]:
    """Every artifact reachable from `roots` ([(uri, digest)]) through parent links, by digest.

    Raw sources are digested again where they lie; a source that changed since it was used is an
    error (the release would otherwise describe data it was not made from).
    """
    nodes: dict[str, Node] = {}
    todo = [(uri, digest, "") for uri, digest in roots]
    while todo:
        uri, digest, type_ = todo.pop()
        if digest in nodes:
            continue
        if type_ == "raw":
            now, manifest = describe_source(uri, "raw")
            if now != digest:
                raise CairnError(
                    f"source {uri} changed since it was used (digest now {now[:12]}, "
                    f"recorded {digest[:12]}); fix: restore it, or re-run the workflow on the "
                    "new data"
                )
            nodes[digest] = Node(digest, uri, canonical_json(manifest))
            continue
        node = Node(digest, uri, read_manifest(uri, digest))
        nodes[digest] = node
        for p in node.parents:
            if "uri" not in p:
                raise unsealed_parents(digest, uri)
            todo.append((p["uri"], p["digest"], p["type"]))
    return nodes


def unsealed_parents(digest: str, uri: str) -> CairnError:
    """The error for an artifact whose manifest predates parent URIs: its ancestry is unknown."""
    return CairnError(
        f"artifact {digest[:12]} at {uri} was sealed before Cairn recorded parent URIs in "
        "manifests; fix: delete .cairn/store (or run with cache: false) and re-run the workflow"
    )


def edges(nodes: dict[str, Node]) -> list[dict[str, str]]:
    """[{parent, child, slot}] of the graph, in a stable order."""
    out = [
        {"parent": p["digest"], "child": n.digest, "slot": p.get("slot", "")}
        for n in nodes.values()
        for p in n.parents
    ]
    return sorted(out, key=lambda e: (e["child"], e["slot"], e["parent"]))


def topological(nodes: dict[str, Node]) -> list[Node]:
    """Nodes with every parent before its children (sources first), ties broken by digest."""
    done: set[str] = set()
    order: list[Node] = []

    def visit(n: Node) -> None:
        if n.digest in done:
            return
        done.add(n.digest)
        for p in sorted(n.parents, key=lambda p: p["digest"]):
            if p["digest"] in nodes:
                visit(nodes[p["digest"]])
        order.append(n)

    for d in sorted(nodes):
        visit(nodes[d])
    return order
