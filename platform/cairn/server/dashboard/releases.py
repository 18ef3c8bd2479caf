"""The pages about releases: the list, and one release (model card, files, audit, checkpoints,
lineage), with the bundle's files readable in the browser.

The model card is the bundle's README.md rendered with markdown-it-py with raw HTML off (a card
is text anyone may have edited: HTML in it shows as text). Files of a bundle are served as
text, PNG or a download, never as HTML or SVG: a page of this origin must not run what a bundle
holds. Auditing re-hashes every file, so a release page shows the newest audit recorded in the
event log (`Client.audit_release`: who, when, what it found), auditing only when none is there
or on request — no audit lives in the server's memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from cairn.client import Client
from cairn.engine.tokens import Principal
from cairn.errors import CairnError, NotFound
from cairn.results import AuditReport
from cairn.server.auth import require
from cairn.server.dashboard.artifacts import lineage_svg
from cairn.server.dashboard.render import PageRoute, page

router = APIRouter(route_class=PageRoute)
Viewer = Annotated[Principal, Depends(require("viewer"))]
CARDS = ("README.md", "MODEL_CARD.md")
TEXT = {".md", ".txt", ".json", ".jsonl", ".csv", ".yaml", ".yml", ".log", ".jinja", ""}
# bundle directory → (when, report): a bundle is immutable, and hashing it all costs seconds.


def client(request: Request) -> Client:
    return request.app.state.client  # type: ignore[no-any-return]


def bundle_of(c: Client, ref: str) -> tuple[dict[str, Any], Path]:
    """(the release's artifact info, its bundle directory here)."""
    info = c.artifact_info(ref)
    if info["type"] != "release":
        raise NotFound(f"{ref} is a {info['type']} artifact, not a release")
    art, local = c.artifact(info["digest"], "release")
    return info, local / str(art.metadata.get("bundle", ""))


def render_card(text: str, files_url: str) -> Markup:
    """Markdown → HTML with raw HTML escaped; links and images relative to the bundle point at
    its files here."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(text)
    for token in tokens:
        for child in token.children or []:
            attr = "href" if child.type == "link_open" else "src" if child.type == "image" else ""
            target = str(child.attrGet(attr) or "") if attr else ""
            parts = urlsplit(target)
            if target and not (parts.scheme or parts.netloc or target.startswith(("/", "#"))):
                child.attrSet(attr, f"{files_url}/{target}")
    return Markup(md.renderer.render(tokens, md.options, {}))


def listing(bundle: Path) -> list[tuple[str, int]]:
    return sorted(
        (str(p.relative_to(bundle)), p.stat().st_size)
        for p in bundle.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def audited(bundle: Path, c: Client, fresh: bool, who: str) -> tuple[str, AuditReport]:
    """The newest recorded audit of the bundle, or a new one (recorded, with who asked)."""
    last = None if fresh else c.last_audit(bundle)
    if last is not None:
        return last
    report = c.audit_release(bundle, load_model=False, by=who)
    return c.last_audit(bundle) or ("now", report)


@router.get("/ui/releases", include_in_schema=False)
def releases(request: Request, who: Viewer) -> Response:
    return page(request, "releases.html", {"releases": client(request).artifacts("release")})


@router.get("/ui/releases/{ref}", include_in_schema=False)
def release_page(ref: str, request: Request, who: Viewer, reaudit: bool = False) -> Response:
    c = client(request)
    info, bundle = bundle_of(c, ref)
    if not bundle.is_dir():
        raise CairnError(f"release {info['digest']}: its bundle {bundle} is not there")
    files_url = f"/ui/releases/{info['digest']}/files"
    card = next((bundle / n for n in CARDS if (bundle / n).is_file()), None)
    index = bundle / "checkpoints" / "index.json"
    checkpoints = json.loads(index.read_text()) if index.is_file() else []
    at, report = audited(bundle, c, reaudit, who.name)
    graph = c.lineage_graph(info["digest"], "ancestors")
    return page(
        request,
        "release.html",
        {
            "a": info,
            "metadata": info["manifest"].get("metadata") or {},
            "producer": info["manifest"].get("producer") or {},
            "bundle": bundle,
            "card": render_card(card.read_text(), files_url) if card else None,
            "files": listing(bundle),
            "files_url": files_url,
            "checkpoints": checkpoints,
            "audit": report,
            "audited_at": at[:19].replace("T", " "),
            "lineage": lineage_svg(graph, "release"),
        },
    )


@router.get("/ui/releases/{ref}/files/{path:path}", include_in_schema=False)
def release_file(ref: str, path: str, request: Request, who: Viewer) -> Response:
    """One file of a bundle: text as text/plain, PNG as an image, anything else a download."""
    _, bundle = bundle_of(client(request), ref)
    root = bundle.resolve()
    target = (root / path).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        raise NotFound(f"the release has no file {path}")
    suffix = target.suffix.lower()
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    if suffix == ".png":
        return FileResponse(target, media_type="image/png", headers=headers)
    if suffix in TEXT or target.name == "SHA256SUMS":
        return FileResponse(target, media_type="text/plain; charset=utf-8", headers=headers)
    return FileResponse(
        target,
        media_type="application/octet-stream",
        headers=headers
        | {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(target.name)}"},
    )
