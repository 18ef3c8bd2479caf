"""How Cairn hashes files: sha256 of streams, files and trees, and the canonical JSON of manifests.

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
