"""The artifact store: immutable, content-described directories sealed by a manifest.

An artifact is a directory with `manifest.json` listing every file (path, size, sha256), its type,
the step run that produced it and its parents. Its digest is a content address: the sha256 of its
files' names and contents (`cairn.stage.files.content_digest`), so identical outputs of two runs,
or of two machines, are one artifact; the manifest's own sha256 digests its provenance.
An artifact becomes visible only when sealed: locally its staging directory is renamed into place
in one `rename`; on remote fsspec stores the manifest is written last, and a directory without a
manifest is not an artifact. So a crash at any point leaves no visible partial artifact.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cairn.errors import CairnError
from cairn.settings import redact
from cairn.stage.files import (
    MANIFEST,
    MANIFEST_FORMAT,
    canonical_json,
    content_digest,
    hash_tree,
    manifest_digest,
    manifest_problem,
    sha256_file,
    sha256_stream,
)


@dataclass(frozen=True)
class Sealed:
    """An artifact as `seal` wrote it: its content digest, where it lies, its type, its manifest
    and the manifest's own digest (its provenance)."""

    digest: str
    uri: str
    type: str
    manifest: dict[str, Any]
    manifest_digest: str


# Where a remote store's downloads go when the caller names no folder (the engine names its home's).
DEFAULT_CACHE = Path.home() / ".cache" / "cairn"


class ArtifactStore:
    """Artifacts under a root: a local directory or any fsspec URI (`s3://bucket/cairn`)."""

    def __init__(self, root: str | Path, cache_dir: Path | None = None) -> None:
        self.root = str(root)
        try:
            self.fs, self._root_path = fsspec.core.url_to_fs(self.root)
        except ImportError as e:
            scheme = self.root.partition("://")[0]
            fix = (
                "pip install -e '.[s3]' (Cairn's s3 extra, which `make` installs)"
                if scheme in ("s3", "s3a")
                else f"install the package that {scheme}:// needs"
            )
            raise CairnError(
                f"CAIRN_STORE {redact(self.root)} needs a package that is not installed ({e}); "
                f"fix: {fix}"
            ) from None
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            Path(self._root_path).mkdir(parents=True, exist_ok=True)
        # Downloads of a remote store's artifacts: an absolute folder, the same for a step and
        # the Ray Train workers it starts (they run in other working directories).
        default = Path(self._root_path) / ".cache" if self.is_local else DEFAULT_CACHE
        self.cache_dir = (cache_dir or default).absolute()

    # -- writing ---------------------------------------------------------------------------
    def staging_dir(self, label: str) -> Path:
        """A fresh local directory to write outputs into; on the store's filesystem if local."""
        base = Path(self._root_path) / ".staging" if self.is_local else self.cache_dir / "staging"
        path = base / f"{label}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    def seal(self, staging: Path, rel: str, fields: dict[str, Any]) -> Sealed:
        """Write the manifest for `staging` and move it to `rel` under the root, atomically."""
        manifest = {"cairn_manifest": MANIFEST_FORMAT, **fields, "files": hash_tree(staging)}
        if not manifest["files"]:
            raise CairnError(
                f"refusing to seal an empty artifact at {rel}: the stage wrote no files"
            )
        data = canonical_json(manifest)
        (staging / MANIFEST).write_bytes(data)
        digest = content_digest(manifest["files"])
        uri = self._join(rel)
        if self.is_local:
            final = Path(uri)
            if final.exists():
                self._quarantine(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final)
        else:
            if self.fs.exists(uri):
                self.fs.rm(uri, recursive=True)
            for f in manifest["files"]:
                self.fs.put_file(str(staging / f["path"]), f"{uri}/{f['path']}")
            self.fs.put_file(str(staging / MANIFEST), f"{uri}/{MANIFEST}")  # last: now visible
            shutil.rmtree(staging, ignore_errors=True)
        return Sealed(digest, uri, manifest["type"], manifest, manifest_digest(data))

    def discard(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def discard_staging(self, label_prefix: str) -> int:
        """Remove staging directories left by a dead driver's run (never visible artifacts)."""
        base = Path(self._root_path) / ".staging" if self.is_local else self.cache_dir / "staging"
        gone = 0
        for d in base.glob(f"{label_prefix}-*"):
            shutil.rmtree(d, ignore_errors=True)
            gone += 1
        return gone

    def _quarantine(self, final: Path) -> None:
        # A path taken by an artifact that failed verification: keep it for inspection.
        dest = Path(self._root_path) / ".quarantine" / f"{int(time.time())}-{uuid.uuid4().hex[:6]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(final, dest)

    def _join(self, rel: str) -> str:
        return (
            f"{self._root_path.rstrip('/')}/{rel}"
            if self.is_local
            else f"{self.root.rstrip('/')}/{rel}"
        )

    # -- reading ---------------------------------------------------------------------------
    def read_manifest(self, uri: str) -> bytes:
        with self.fs.open(f"{uri}/{MANIFEST}", "rb") as f:
            return f.read()

    def verify(self, uri: str, digest: str | None = None) -> list[str]:
        """Re-hash an artifact. Returns the problems found (empty when it is intact)."""
        try:
            data = self.read_manifest(uri)
        except FileNotFoundError:
            return [f"{MANIFEST}: missing (artifact deleted or never sealed)"]
        if digest and (problem := manifest_problem(data, digest)):
            return [f"{MANIFEST}: {problem}"]
        manifest = json.loads(data)
        problems = []
        listed = {f["path"] for f in manifest["files"]}
        if self.is_local:
            root = Path(uri)
            for f in manifest["files"]:
                p = root / f["path"]
                if not p.is_file():
                    problems.append(f"{f['path']}: missing")
                elif p.stat().st_size != f["size"]:
                    problems.append(f"{f['path']}: size {p.stat().st_size} != {f['size']}")
                elif sha256_file(p) != f["sha256"]:
                    problems.append(f"{f['path']}: sha256 mismatch")
            extra = {e["path"] for e in hash_tree(root)} - listed
        else:
            for f in manifest["files"]:
                fp = f"{uri}/{f['path']}"
                if not self.fs.exists(fp):
                    problems.append(f"{f['path']}: missing")
                    continue
                with self.fs.open(fp, "rb") as fh:
                    if sha256_stream(fh) != f["sha256"]:
                        problems.append(f"{f['path']}: sha256 mismatch")
            extra = set()
        problems += [f"{p}: not in manifest" for p in sorted(extra)]
        return problems

    def local_path(self, uri: str, digest: str) -> Path:
        """A local path holding `uri` (an artifact or an external source, on any filesystem):
        itself where it is local, else a download cached by digest."""
        fs, path = fsspec.core.url_to_fs(uri)
        if isinstance(fs, LocalFileSystem):
            return Path(path)
        dest = self.cache_dir / "artifacts" / digest
        # A single file keeps its name (its extension says its format), in a folder of its own.
        as_file = dest.with_name(f"{digest}.file") / posixpath.basename(path.rstrip("/"))
        for cached in (dest, as_file):
            if cached.exists():  # renamed into place whole, so existing means complete
                return cached
        is_dir = fs.isdir(path)
        final = dest if is_dir else as_file.parent
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{digest}.tmp-{uuid.uuid4().hex[:6]}")
        if is_dir:
            fs.get(path, str(tmp), recursive=True)
        else:
            tmp.mkdir()
            fs.get(path, str(tmp / as_file.name))
        os.rename(tmp, final)
        return dest if is_dir else as_file


def describe_source(uri: str, type_: str, name: str | None = None) -> tuple[str, dict[str, Any]]:
    """Digest external data where it lies (no copy): the root of a lineage graph. Its digest
    covers its files' names relative to it and their contents, never where it lies, so a moved
    checkout or another machine's copy is the same source; the manifest's `source` is `name` (how
    the workflow wrote it: relative to the workflow file, or a URI) when given."""
    try:
        files = _source_files(uri)
    except Exception as e:  # the filesystem's own error (missing, permission, network): say where
        raise CairnError(
            f"cannot read source {uri} ({type(e).__name__}: {e}); fix: check that it exists "
            "and that this machine can read it (permissions; for a URI, credentials and endpoint)"
        ) from e
    if not files:
        raise CairnError(
            f"source {uri} holds no files; fix: point the input at the data files, or at a "
            "folder that holds them"
        )
    manifest = {
        "cairn_manifest": MANIFEST_FORMAT,
        "type": type_,
        "source": name or uri,
        "files": files,
    }
    return content_digest(files), manifest


def _source_files(uri: str) -> list[dict[str, Any]]:
    fs, path = fsspec.core.url_to_fs(uri)
    if isinstance(fs, LocalFileSystem):
        return hash_tree(Path(path))
    files = []
    entries = [path] if fs.isfile(path) else sorted(fs.find(path))
    for e in entries:
        with fs.open(e, "rb") as fh:
            digest = sha256_stream(fh)
        rel = os.path.relpath(e, path) if e != path else os.path.basename(e)
        files.append({"path": rel, "size": fs.size(e), "sha256": digest})
    return files
