"""How a release names where things came from, portably: raw sources as the workflow wrote
them (relative to the workflow file, or a URI), artifacts by their address in the store, never a
path on the machine that made the release; and, with `include_sources`, a copy of each source
named by a relative path, so the bundle alone is enough to re-run the workflow (`cairn
reproduce`). A source is raw data or a model imported from outside (a Hugging Face directory
given as a step's `model`): both are roots of the lineage, listed with the licence the workflow
stated for them, or a warning where it stated none."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from cairn.stage import Ancestor

# What a release says of a source whose licence the workflow does not state (as curate's card).
NOT_DECLARED = "not declared: check before redistributing"


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


def listed(order: list[Ancestor]) -> list[dict[str, Any]]:
    """Every root of the lineage (raw data and imported models) as data/manifest.json lists
    them: where the workflow named it, its type, digest, size, and the licence the workflow
    stated for it (`license`, None where it stated none)."""
    return [
        {
            "uri": where(n),
            "type": n.type,
            "digest": n.digest,
            "files": len(n.manifest["files"]),
            "bytes": sum(f["size"] for f in n.manifest["files"]),
            "license": n.manifest.get("license"),
        }
        for n in order
        if n.source
    ]


def license_text(source: dict[str, Any]) -> str:
    """A listed source's licence as a card states it, on one line."""
    return " ".join(str(source.get("license") or NOT_DECLARED).split())


def curated_licenses(sources: list[dict[str, Any]], datasets: list[dict[str, Any]]) -> None:
    """Fill in the licence of a raw source the workflow stated none for from what curate's
    config said of it (`sources: {NAME: {license: ...}}`, recorded in each dataset.json)."""
    for s in sources:
        if not s.get("license"):
            said = [str(lic) for d in datasets if (lic := _said(d, s["uri"]))]
            s["license"] = said[0] if said else None


def _said(dataset: dict[str, Any], name: str) -> Any:
    entry = (dataset.get("sources") or {}).get(name)
    return entry.get("license") if isinstance(entry, dict) else None
