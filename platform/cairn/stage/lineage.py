"""The lineage graph as a stage sees it: its inputs' ancestors, their manifests and their files.

A stage that publishes or judges a model by where it came from (release, evaluate's
decontamination gate) asks its context for `ctx.ancestry(*inputs)`: the engine walks the sealed
manifests back to the raw sources (`cairn.artifacts.ancestry`) and hands back this graph. The stage
reads ancestor files through `Ancestor.open`/`read`, never by finding artifacts in the store
itself, so it depends on its declared inputs and on nothing else.

Also here, because cards drawn by stages and `cairn lineage --format` draw the same shape: the
Graphviz and Mermaid renderings of flat {nodes, edges} graphs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import IO, Any

from cairn.errors import CairnError


@dataclass(frozen=True)
class Ancestor:
    """One artifact of the graph: its digest, where it lies and its manifest (bytes as sealed).

    `source` marks external data: a raw source, or a model directory given as an input that no
    step made (its manifest is the one Cairn computed when it digested the directory).
    """

    digest: str
    uri: str
    manifest_bytes: bytes
    source: bool = False

    @cached_property
    def manifest(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manifest_bytes)
        return data

    @property
    def type(self) -> str:
        return str(self.manifest["type"])

    @property
    def step(self) -> str | None:
        step = self.manifest.get("step")
        return str(step) if step else None

    @property
    def parents(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("parents") or [])

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("files") or [])

    def entry(self, path: str) -> dict[str, Any] | None:
        """The manifest's record {path, size, sha256} of one file, or None."""
        return next((f for f in self.files if f["path"] == path), None)

    def open(self, path: str) -> IO[bytes]:
        """The file `path` of this artifact, opened for reading where it lies (any fsspec URI).
        Not checked: `read` checks, and a caller that streams checks as it goes."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.uri)
        root = root.rstrip("/")
        if self.source and root.rsplit("/", 1)[-1] == path and fs.isfile(root):
            root = root.rsplit("/", 1)[0]  # a single-file source: its one file is itself
        f: IO[bytes] = fs.open(f"{root}/{path}", "rb")
        return f

    def read(self, path: str) -> bytes | None:
        """The bytes of file `path`, checked against the manifest; None if the manifest has no
        such file. A file that changed since it was sealed is an error that says what to do."""
        entry = self.entry(path)
        if entry is None:
            return None
        with self.open(path) as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise modified(self, path)
        return data


def modified(node: Ancestor, path: str) -> CairnError:
    """The error for an ancestor's file that no longer matches its manifest."""
    return CairnError(
        f"{node.uri}/{path} does not match its manifest (sha256 changed): the artifact "
        f"{node.digest[:12]} was modified after it was sealed; fix: re-run the step "
        f"'{node.step}' so it is recomputed"
    )


@dataclass
class Ancestry:
    """Every artifact reachable from some roots through parent links, by digest."""

    nodes: dict[str, Ancestor] = field(default_factory=dict)

    def __getitem__(self, digest: str) -> Ancestor:
        return self.nodes[digest]

    def __contains__(self, digest: object) -> bool:
        return digest in self.nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def of_type(self, type_: str) -> list[Ancestor]:
        return [n for n in self.topological() if n.type == type_]

    def edges(self) -> list[dict[str, str]]:
        """[{parent, child, slot}] of the graph, in a stable order."""
        out = [
            {"parent": p["digest"], "child": n.digest, "slot": p.get("slot", "")}
            for n in self.nodes.values()
            for p in n.parents
        ]
        return sorted(out, key=lambda e: (e["child"], e["slot"], e["parent"]))

    def topological(self) -> list[Ancestor]:
        """Nodes with every parent before its children (sources first), ties broken by digest."""
        done: set[str] = set()
        order: list[Ancestor] = []

        def visit(n: Ancestor) -> None:
            if n.digest in done:
                return
            done.add(n.digest)
            for p in sorted(n.parents, key=lambda p: p["digest"]):
                if p["digest"] in self.nodes:
                    visit(self.nodes[p["digest"]])
            order.append(n)

        for d in sorted(self.nodes):
            visit(self.nodes[d])
        return order


def models_above(model: str, parents: Callable[[str], Iterable[dict[str, Any]]]) -> set[str]:
    """`model` and every model above it: `parents(digest)` gives an artifact's parent links
    ({type, digest, ...}, as manifests write them; nothing for one it does not know). The
    release (over its ancestry) and the audit (over a bundle's manifests) both ask this."""
    seen, todo = {model}, [model]
    while todo:
        for p in parents(todo.pop()):
            if p.get("type") == "model" and p.get("digest") not in seen:
                seen.add(p["digest"])
                todo.append(p["digest"])
    return seen


# --- drawing flat graphs ----------------------------------------------------------------------


def label(n: dict[str, Any]) -> str:
    """`step (kind) type digest12`, or `source path digest12` for raw data."""
    if n.get("step"):
        return f"{n['step']} ({n.get('kind')})\\n{n['type']} {n['digest'][:12]}"
    uri = str(n.get("uri") or "")
    return f"source {uri.rstrip('/').rsplit('/', 1)[-1]}\\n{n['digest'][:12]}"


def to_dot(nodes: list[dict[str, Any]], edges: list[dict[str, str]]) -> str:
    """Graphviz: nodes {digest, type, kind, step, uri}, edges {parent, child, slot}."""
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
    """Mermaid flowchart of the same shape, for Markdown (model cards, READMEs)."""
    lines = ["flowchart LR"]
    for n in nodes:
        text = label(n).replace("\\n", "<br/>").replace('"', "'")
        open_, close = ("[(", ")]") if n["type"] == "raw" else ("[", "]")
        lines.append(f'  n{n["digest"][:12]}{open_}"{text}"{close}')
    for e in edges:
        lines.append(f"  n{e['parent'][:12]} -->|{e['slot']}| n{e['child'][:12]}")
    return "\n".join(lines) + "\n"
