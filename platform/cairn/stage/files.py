"""How Cairn hashes files: sha256 of streams, files and trees, the canonical JSON of manifests,
and an artifact's identity.

An artifact's digest is a content address (`content_digest`): the sha256 of its files' names and
contents, nothing else, so the same bytes have the same digest on any machine, in any run, in any
folder. Its manifest holds that file list *and* its provenance (producing run, parents, config,
versions); the manifest's own sha256 (`manifest_digest`) digests the provenance for the audit.
Manifests sealed before content digests (format 1) were addressed by their own sha256: they stay
readable, and `manifest_problem` checks each by the rule it was sealed under.

A leaf of the package (it imports nothing of Cairn), because both sides of the stage boundary
hash: the engine seals artifacts and digests sources with it, and stages (release, evaluate,
curate) check the files they copy and record against the same rules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# 1: the digest was the manifest's sha256 (named the producing run); 2: a content digest.
MANIFEST_FORMAT = 2
_CHUNK = 1 << 20


def canonical_json(data: Any) -> bytes:
    """The bytes a manifest is written as (and hashed as): sorted keys, UTF-8, one newline."""
    return json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"


def sha256_stream(f: Any) -> str:
    """sha256 of an open binary file, read in chunks (artifacts can be many GB)."""
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return sha256_stream(f)


def hash_tree(root: Path, skip: tuple[str, ...] = (MANIFEST,)) -> list[dict[str, Any]]:
    """Every regular file under `root` (or `root` itself if a file), sorted, with size and sha256."""
    if root.is_file():
        return [{"path": root.name, "size": root.stat().st_size, "sha256": sha256_file(root)}]
    files = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in skip:
            files.append({"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)})
    return files


def content_digest(files: list[dict[str, Any]]) -> str:
    """An artifact's identity: sha256 over its files' relative names and sha256s, in name order.
    Sizes, where the files lie and who wrote them are not part of it."""
    listing = sorted((str(f["path"]), str(f["sha256"])) for f in files)
    return hashlib.sha256(
        canonical_json([{"path": p, "sha256": h} for p, h in listing])
    ).hexdigest()


def manifest_digest(data: bytes) -> str:
    """The digest of a manifest's bytes: its provenance, as a release records it."""
    return hashlib.sha256(data).hexdigest()


def artifact_digest(data: bytes) -> str:
    """The digest of the artifact that manifest bytes `data` describe, by the rule it was sealed
    under. Raises ValueError for bytes that are no manifest."""
    try:
        manifest = json.loads(data)
        if manifest.get("cairn_manifest") == 1:
            return manifest_digest(data)
        return content_digest(manifest["files"])
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError("no JSON object with a file list") from e


def manifest_problem(data: bytes, digest: str) -> str | None:
    """Why manifest bytes `data` do not describe the artifact `digest` (None when they do)."""
    try:
        actual = artifact_digest(data)
    except ValueError:
        return "is not a manifest (no JSON object with a file list)"
    if actual != digest:
        return f"does not match digest {digest[:12]} (its file list names other content)"
    return None
