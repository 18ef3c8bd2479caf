"""What a source is: one input of the step, its files in a stable order, its documents' ids and
what happened to them.

A source is a file or a directory, local or behind any fsspec URI (`s3://…`, `memory://…`),
walked recursively in sorted order, so the same tree always yields the same files in the same
order. Formats: JSON lines (.jsonl, .ndjson, .json), Parquet (one string column), plain text
(.txt, .md, .rst: one document per file or per paragraph); JSON lines and text may be compressed
(.gz, .zst). Reading them is `readers`.

A document's id is `doc_id(source digest, file path in the source, index)`, its index being its
position within its file: stable for as long as the source is unchanged, and unchanged when a
record elsewhere is fixed or skipped. Each source keeps its own counts (`SourceStats`), written to
dataset.json per source, and its settings from the step's config (weight, licence).
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cairn.errors import StageError
from cairn.stage import InputArtifact
from cairn.stages.curate.config import CurateConfig, SourceConfig
from cairn.stages.curate.filters import FILTERS

JSONL = (".jsonl", ".ndjson", ".json")
PARQUET = (".parquet",)
TEXT = (".txt", ".md", ".rst")
COMPRESSED = (".gz", ".zst")
SUPPORTED = (
    ".jsonl/.ndjson/.json (one JSON object per line), .parquet, .txt, .md, .rst; "
    "JSON lines and text may be compressed as .gz or .zst"
)


@dataclass(frozen=True)
class SourceFile:
    """One readable file of a source: plain data, so it pickles into a Ray task."""

    url: str  # what to open: a local path, or an fsspec URL readable from any node
    relpath: str  # posix, relative to the source's root; the file name for a single-file source
    origin: str  # as shown to users: "<source label>/<relpath>", or the label for a single file
    size: int = 0  # bytes on disk (compressed), for balancing work

    @property
    def path(self) -> Path:
        """The file as a local path (meaningful only for local sources)."""
        return Path(self.url)


def doc_id(source_digest: str, relpath: str, index: int) -> str:
    """A document's id (16 hex chars): the same for as long as the source is unchanged.

    Any change to the source's files gives it a new digest, hence new ids: an id always names
    one exact text, which is what tracing a token back to its document needs.
    """
    return hashlib.sha256(f"{source_digest}:{relpath}:{index}".encode()).hexdigest()[:16]


def source_uri(artifact: InputArtifact) -> str:
    """Where the source's files lie. The engine records an external source's URI in its
    metadata; reading from there (not from a copy on the driver's disk) lets a Ray task on any
    node read any file. A source given only as a path is read from that path."""
    uri = artifact.metadata.get("source_uri")
    return str(uri) if uri else str(artifact.path)


def list_files(artifact: InputArtifact, label: str) -> tuple[list[SourceFile], list[str]]:
    """The readable files of one source in a stable order, and the ones skipped as unsupported
    (by path relative to the source). Hidden files and folders (.git, .DS_Store) are not data."""
    uri = source_uri(artifact)
    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ValueError, ImportError) as e:  # an unknown protocol, or its package missing
        raise StageError(f"{label}: cannot open {uri} ({e}); check the URI") from e
    if isinstance(fs, LocalFileSystem):
        return _list_local(Path(root), label)
    try:
        if fs.isfile(root):
            name = posixpath.basename(root.rstrip("/"))
            _check_single(name, label)
            return [SourceFile(fs.unstrip_protocol(root), name, label, fs.size(root))], []
        if not fs.isdir(root):
            raise StageError(f"{label}: {uri} does not exist; check the source's URI")
        found = fs.find(root, detail=True)
    except OSError as e:
        raise StageError(f"{label}: cannot list {uri} ({e}); check the URI and access") from e
    entries = []
    for path, info in found.items():
        rel = posixpath.relpath(path, root.rstrip("/") or "/")
        entries.append((rel, fs.unstrip_protocol(path), int(info.get("size") or 0)))
    return _classify(sorted(entries), label)


source_files = list_files  # the name the pipeline used before list_files


def _list_local(root: Path, label: str) -> tuple[list[SourceFile], list[str]]:
    if root.is_file():
        _check_single(root.name, label)
        return [SourceFile(str(root), root.name, label, root.stat().st_size)], []
    if not root.is_dir():
        raise StageError(f"{label}: {root} does not exist; check the source's path")
    entries = [
        (p.relative_to(root).as_posix(), str(p), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    ]
    return _classify(sorted(entries), label)


def _classify(
    entries: list[tuple[str, str, int]], label: str
) -> tuple[list[SourceFile], list[str]]:
    files, skipped = [], []
    for rel, url, size in entries:
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if kind(rel) is None:
            skipped.append(rel)
        else:
            files.append(SourceFile(url, rel, f"{label}/{rel}", size))
    return files, skipped


def _check_single(name: str, label: str) -> None:
    if kind(name) is None:
        hint = (
            "Parquet compresses its own pages: decompress the file"
            if name.lower().removesuffix(".gz").removesuffix(".zst").endswith(PARQUET)
            else "convert the file, or point the source at a supported one"
        )
        raise StageError(
            f"{label}: unsupported file type '{name}'; curate reads {SUPPORTED} ({hint})"
        )


def kind(name: str) -> str | None:
    """The reader a file's name calls for (jsonl, parquet, text), or None: not supported."""
    lower = name.lower()
    if lower.endswith(PARQUET):
        return "parquet"
    for ext in COMPRESSED:
        lower = lower.removesuffix(ext)
    if lower.endswith(JSONL):
        return "jsonl"
    if lower.endswith(TEXT):
        return "text"
    return None


# --- the step's inputs as sources: names, settings, counts --------------------------------


@dataclass
class SourceStats:
    """What happened to one input's documents, as written to dataset.json."""

    documents_in: int = 0
    documents_out: int = 0
    tokens: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    pii: dict[str, int] | None = None  # placeholders inserted, by type, when scrubbing is on
    skipped: dict[str, int] = field(default_factory=dict)  # malformed records, by reason

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "removed": dict(self.removed),
            "tokens": self.tokens,
            "skipped": dict(self.skipped),
        }
        if self.pii is not None:
            out["pii"] = dict(self.pii)
        return out


@dataclass
class Source:
    """One input and what happened to its documents."""

    name: str
    artifact: InputArtifact
    settings: SourceConfig
    files: int = 0
    stats: SourceStats = field(default_factory=SourceStats)

    def record(self) -> dict[str, Any]:
        """This source's entry under dataset.json's "sources"."""
        record = self.stats.as_dict()
        record.update(
            digest=self.artifact.digest,
            # The config's word on it, else what the workflow stated on the input itself.
            license=self.settings.license or self.artifact.metadata.get("license"),
            weight=self.settings.weight,
            files=self.files,
        )
        return record


def from_inputs(
    config: CurateConfig, inputs: dict[str, Any], filter_names: tuple[str, ...]
) -> list[Source]:
    """The step's `sources` input as Sources: unique names, their settings, empty counts."""
    given = inputs.get("sources")
    artifacts = given if isinstance(given, list) else [given] if given else []
    if not artifacts:
        raise StageError("curate has no sources; list at least one under the step's inputs")
    names: list[str] = []
    for a in artifacts:
        names.append(_unique(a.name or a.path.name, names))
    settings = _match_settings(config, names)
    return [
        Source(
            name,
            a,
            settings.get(name, SourceConfig()),
            stats=SourceStats(
                removed=dict.fromkeys(filter_names, 0),
                pii={} if config.pii else None,
            ),
        )
        for name, a in zip(names, artifacts, strict=True)
    ]


def _match_settings(config: CurateConfig, names: list[str]) -> dict[str, SourceConfig]:
    """config.sources keys → source names: a key is the input as written, or its file or folder
    name with or without extension ("./data/plays.jsonl", "plays.jsonl", "plays")."""

    def aliases(name: str) -> set[str]:
        p = Path(name.split("#", 1)[0].rstrip("/"))
        return {name, p.name, p.name.split(".", 1)[0]}

    matched: dict[str, SourceConfig] = {}
    for key, value in config.sources.items():
        hits = [n for n in names if key in aliases(n)]
        if len(hits) != 1:
            what = "matches no source" if not hits else f"matches several sources ({hits})"
            raise StageError(
                f"curate config: sources.{key} {what}; the sources are {names}: key each "
                "setting by the input as written in the workflow or by its file/folder name"
            )
        matched[hits[0]] = value
    return matched


def _unique(name: str, taken: list[str]) -> str:
    """Two inputs with the same name get separate statistics: 'plays', 'plays#2'."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    return candidate


def removed(srcs: list[Source], filter_names: tuple[str, ...]) -> dict[str, int]:
    """Documents removed by each filter, over all sources (dataset.json's "filters")."""
    return {n: sum(s.stats.removed[n] for s in srcs) for n in filter_names}
