"""The pages about artifacts: one artifact (files, digest, lineage both ways) and the endpoints.

An artifact's page draws two graphs from Cairn's database: back to the raw sources it was made
from, and forward to everything made from it. Each box links to that artifact's page, so a
person can walk from a release to the files it came from, one click per step.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from cairn.client import Client
from cairn.engine.tokens import Principal
from cairn.results import LineageGraph
from cairn.server.auth import require
from cairn.server.dashboard.render import PageRoute, page
from cairn.server.dashboard.svg import Node, condense, graph_svg

router = APIRouter(route_class=PageRoute)
Viewer = Annotated[Principal, Depends(require("viewer"))]
FILES_SHOWN = 500  # a dataset may hold many thousand files; the manifest has them all


def client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


def artifact_node(n: dict[str, Any], root: str) -> Node:
    """A lineage box: a made artifact names its step, a raw source its file or folder."""
    raw = not n.get("step")
    name = PurePosixPath(str(n.get("uri") or "")).name or n["digest"][:12]
    flags = [("raw", raw), ("root", n["digest"] == root), ("corrupt", n.get("status") == "corrupt")]
    css = " ".join([f"t-{n['type']}"] + [name for name, on in flags if on])
    return Node(
        id=n["digest"],
        label=name if raw else f"{n['step']}",
        sub=f"{'raw source' if raw else n['type']} · {n['digest'][:8]}",
        css=css,
        href=f"/ui/artifacts/{n['digest']}",
        title=str(n.get("uri") or n["type"]),  # the link and the box already show the digest
    )


def lineage_svg(graph: LineageGraph, ident: str) -> Any:
    """A lineage graph as boxes, the artifact asked about outlined."""
    nodes = [artifact_node(n, graph.root) for n in graph.nodes]
    edges = [(e["parent"], e["child"]) for e in graph.edges]
    nodes, edges = condense(nodes, edges)
    return graph_svg(nodes, edges, f"lineage of {graph.root}", ident=ident)


@router.get("/ui/artifacts/{ref}", include_in_schema=False)
def artifact_page(ref: str, request: Request, who: Viewer) -> Response:
    c = client(request)
    info = c.artifact_info(ref)
    up = c.lineage_graph(info["digest"], "ancestors")
    down = c.lineage_graph(info["digest"], "descendants")
    manifest = info["manifest"]
    files = manifest.get("files") or []
    return page(
        request,
        "artifact.html",
        {
            "a": info,
            "manifest": manifest,
            "metadata": manifest.get("metadata") or {},
            "producer": manifest.get("producer") or {},
            "files": files[:FILES_SHOWN],
            "files_more": max(len(files) - FILES_SHOWN, 0),
            "ancestors": lineage_svg(up, "up") if len(up.nodes) > 1 else None,
            "descendants": lineage_svg(down, "down") if len(down.nodes) > 1 else None,
            "counts": (len(up.nodes) - 1, len(down.nodes) - 1),
        },
    )


@router.get("/ui/endpoints", include_in_schema=False)
def endpoints(request: Request, who: Viewer) -> Response:
    """Every endpoint a `serve` step recorded, newest first, with the digest of the model it
    serves and whether it answers now (only one kept running can)."""
    from concurrent.futures import ThreadPoolExecutor

    from cairn.server.live import endpoint_health

    found = client(request).artifacts("endpoint")
    # Each check may wait its whole timeout on a dead address: ask them all at once.
    with ThreadPoolExecutor(max_workers=16) as pool:
        live = list(pool.map(lambda e: endpoint_health(e.metadata)["live"], found))
    rows = list(zip(found, live, strict=True))
    return page(request, "endpoints.html", {"endpoints": rows})
