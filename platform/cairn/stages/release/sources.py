"""How a release names where things came from, portably: raw sources as the workflow wrote
them (relative to the workflow file, or a URI), artifacts by their address in the store, never a
path on the machine that made the release; and, with `include_sources`, a copy of each source
named by a relative path, so the bundle alone is enough to re-run the workflow (`cairn
reproduce`)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from cairn.stage import Ancestor


def carried(name: str) -> str | None:
    """Where a raw source named `name` in the workflow lies in a bundle that carries it
    (`sources/` + the name as written, without `./`); None for a source that is not carried (a
    URI or an absolute path: recorded with its digest, read where it lies)."""
    rel = PurePosixPath(name)
    if "://" in name or rel.is_absolute() or ".." in rel.parts or not rel.parts:
        return None
    return f"sources/{rel.as_posix()}"


def where(n: Ancestor) -> str:
    """Where an ancestor lies, as a release may say it: a raw source as the workflow wrote it
    (relative to the workflow file, or a URI), an artifact by its address in the store
    (`kind/step/fingerprint/output`) — never a path on the machine that made the release."""
    if n.source:
        return str(n.manifest.get("source") or n.digest)
    return "/".join(n.uri.rstrip("/").split("/")[-4:])


def portable(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest as the release carries it: each parent named by digest, type, slot and how the
    workflow named it (`corpus.dataset`, `./data/chat/sft.jsonl`), without where it lay
    (lineage.json says where each node is, portably). Its file list, and so the content digest
    it is checked against, is the sealed one."""
    if "parents" not in manifest:
        return manifest
    parents = [{k: v for k, v in p.items() if k != "uri"} for p in manifest["parents"]]
    return {**manifest, "parents": parents}
