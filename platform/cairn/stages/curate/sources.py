"""Reading raw inputs into documents: the only place that knows about file formats.

A source is a file or a directory, local or behind any fsspec URI (`s3://…`, `memory://…`),
walked recursively in sorted order, so the same tree always yields the same files in the same
order. Formats: JSON lines (.jsonl, .ndjson, .json), Parquet (one string column), plain text
(.txt, .md, .rst: one document per file or per paragraph); JSON lines and text may be compressed
(.gz, .zst). Everything is read as a stream (line by line, or Parquet record batch by batch), so
a file of any size fits in a worker.

Curate reads each file in its own Ray task, so nothing here depends on other files: a document's
`index` is its position within its file (its line for JSON lines, its row for Parquet, its
paragraph for text), counted whether or not the record was readable, and its id is
`doc_id(source digest, file path in the source, index)`: stable for as long as the source is
unchanged, and unchanged when a record elsewhere is fixed or skipped.

A broken record is the data owner's problem, so it is reported to them: with
`on_malformed="error"` as a `StageError` naming the file, the line, what is wrong and the fix;
with "skip" as a `Skipped` record (where, reason, detail) that the pipeline counts. Nothing is
dropped silently.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import posixpath
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal, get_args

import fsspec
from fsspec.implementations.local import LocalFileSystem

from cairn.errors import StageError
from cairn.stage import InputArtifact
from cairn.stages.curate.filters import FILTERS

JSONL = (".jsonl", ".ndjson", ".json")
PARQUET = (".parquet",)
TEXT = (".txt", ".md", ".rst")
COMPRESSED = (".gz", ".zst")
SUPPORTED = (
    ".jsonl/.ndjson/.json (one JSON object per line), .parquet, .txt, .md, .rst; "
    "JSON lines and text may be compressed as .gz or .zst"
)
# Why a record was skipped: the keys of the per-source skip counts.
Reason = Literal[
    "not_utf8", "invalid_json", "not_an_object", "missing_field", "not_a_string", "corrupt_file"
]
REASONS: tuple[str, ...] = get_args(Reason)

_CHUNK = 1 << 20  # bytes read (or decompressed) at a time
_ZSTD_IN = 1 << 16  # compressed bytes read at a time from a .zst file
_ZSTD_PIECE = 1 << 10  # compressed bytes decoded at a time: bounds what one step can output


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


@dataclass(frozen=True)
class ReadOptions:
    """How records become documents; picklable, so it travels into Ray tasks."""

    text_field: str = "text"  # JSON lines: the field holding the text; Parquet: the column
    split_text_files: Literal["document", "paragraph"] = "document"
    on_malformed: Literal["error", "skip"] = "error"
    batch_rows: int = 8192  # Parquet rows per record batch (memory only; never changes results)

    def __post_init__(self) -> None:
        if self.split_text_files not in ("document", "paragraph"):
            raise ValueError(f"split_text_files must be document or paragraph, not {self!r}")
        if self.on_malformed not in ("error", "skip"):
            raise ValueError(f"on_malformed must be error or skip, not {self!r}")
        if not self.text_field or self.batch_rows < 1:
            raise ValueError(f"text_field must be non-empty and batch_rows >= 1: {self!r}")


@dataclass(frozen=True)
class Document:
    """One document as read, before any cleaning."""

    index: int  # position within its file: the basis of its id
    text: str


@dataclass(frozen=True)
class Skipped:
    """A record that could not be read, counted instead of failing the step."""

    index: int  # the position it held, so the documents after it keep their ids
    where: str  # "<origin>:<line>" (Parquet: "<origin>:row <n>")
    reason: Reason
    detail: str  # what is wrong, for a person


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
        if _kind(rel) is None:
            skipped.append(rel)
        else:
            files.append(SourceFile(url, rel, f"{label}/{rel}", size))
    return files, skipped


def _check_single(name: str, label: str) -> None:
    if _kind(name) is None:
        hint = (
            "Parquet compresses its own pages: decompress the file"
            if name.lower().removesuffix(".gz").removesuffix(".zst").endswith(PARQUET)
            else "convert the file, or point the source at a supported one"
        )
        raise StageError(
            f"{label}: unsupported file type '{name}'; curate reads {SUPPORTED} ({hint})"
        )


def _kind(name: str) -> str | None:
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


def read_documents(file: SourceFile, opts: ReadOptions) -> Iterator[Document | Skipped]:
    """Every record of one file, in file order: a Document, or (with on_malformed="skip") a
    Skipped. With on_malformed="error" the first broken record raises a StageError."""
    kind = _kind(file.relpath)
    if kind is None:
        raise StageError(f"{file.origin}: unsupported file type; curate reads {SUPPORTED}")
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text": _read_text}[kind]
    skip = opts.on_malformed == "skip"
    for record in reader(file, opts):
        if isinstance(record, _Bad):
            if not skip:
                raise StageError(f"{record.where}: {record.detail}; {record.fix}")
            yield Skipped(record.index, record.where, record.reason, record.detail)
        else:
            yield record


def read_file(
    file: SourceFile, text_field: str, split_text_files: str, check_cancelled: Callable[[], None]
) -> Iterator[str]:
    """The texts of one file, raising on the first broken record (the pre-Ray-Data interface)."""
    opts = ReadOptions(text_field, split_text_files)  # type: ignore[arg-type]
    for n, record in enumerate(read_documents(file, opts), 1):
        if n % 10_000 == 0:
            check_cancelled()
        assert isinstance(record, Document)  # on_malformed="error" raised on anything else
        yield record.text


# --- the readers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bad:
    """A broken record, before on_malformed decides whether it raises or is counted."""

    index: int
    where: str
    reason: Reason
    detail: str
    fix: str


class _Broken(Exception):
    """The byte stream of a file ended early or could not be decoded at `offset`."""

    def __init__(self, cause: BaseException, offset: int) -> None:
        super().__init__(str(cause))
        self.cause, self.offset = cause, offset


@contextlib.contextmanager
def _open(file: SourceFile) -> Iterator[IO[bytes]]:
    try:
        if "://" in file.url:
            with fsspec.open(file.url, "rb") as f:
                yield f
        else:
            with open(file.url, "rb") as f:
                yield f
    except FileNotFoundError as e:
        raise StageError(
            f"{file.origin}: the file is gone ({e}); it was listed when the step started, so "
            "the source changed while curate ran: run the step again"
        ) from e
    except OSError as e:  # reading errors are turned into corrupt_file records; this is opening
        raise StageError(f"{file.origin}: cannot open the file ({e}); check its access") from e


def _chunks(f: IO[bytes], name: str) -> Iterator[bytes]:
    """The file's decompressed bytes, in chunks; `_Broken` where they stop making sense."""
    offset = 0
    lower = name.lower()
    try:
        if lower.endswith(".gz"):
            g = gzip.GzipFile(fileobj=f, mode="rb")
            # read1: what one step of decompression gives, so the text before a truncation
            # is yielded before the error (read() would discard its partly filled buffer).
            while chunk := g.read1(_CHUNK):
                offset += len(chunk)
                yield chunk
        elif lower.endswith(".zst"):
            for chunk in _zstd(f):
                offset += len(chunk)
                yield chunk
        else:
            while chunk := f.read(_CHUNK):
                offset += len(chunk)
                yield chunk
    except (OSError, EOFError, zlib.error, _ZstdError) as e:
        raise _Broken(e, offset) from e


class _ZstdError(Exception):
    pass


def _zstd(f: IO[bytes]) -> Iterator[bytes]:
    # zstandard's stream_reader and read_to_iter return a truncated frame as if it were
    # complete, so frames are decoded one by one with decompressobj, and a frame still open when
    # the input ends is reported. decompressobj has no output limit, so it is fed small pieces:
    # very repetitive text expands by thousands, and 64 KiB of it came out as one 275 MB string
    # (1 KiB pieces: at most a few MB; they decode ~250 MB/s, far faster than JSON is parsed).
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame, fed = dctx.decompressobj(), 0
    while block := f.read(_ZSTD_IN):
        view = memoryview(block)
        for pos in range(0, len(view), _ZSTD_PIECE):
            piece = view[pos : pos + _ZSTD_PIECE]
            try:
                out = frame.decompress(piece)
                fed += len(piece)
                while frame.eof:  # the frame is complete; what follows it starts the next one
                    rest = frame.unused_data
                    frame, fed = dctx.decompressobj(), len(rest)
                    if rest:
                        out += frame.decompress(rest)
            except zstandard.ZstdError as e:
                raise _ZstdError(str(e)) from e
            if out:
                yield out
    if fed:
        raise _ZstdError("the file ends in the middle of a zstd frame (truncated)")


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines without their b"\\n". A last line cut off by `_Broken` is never yielded."""
    parts: list[bytes] = []
    for chunk in chunks:
        if b"\n" not in chunk:
            parts.append(chunk)  # a line longer than a chunk: joined once, not re-copied
            continue
        lines = chunk.split(b"\n")
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
            parts = []
        tail = lines.pop()
        if tail:
            parts.append(tail)
        yield from lines
    if parts:
        yield b"".join(parts)


def _corrupt(file: SourceFile, index: int, line: int, e: _Broken) -> _Bad:
    """The unreadable rest of a file, from `line` on, as one record."""
    after = f"after line {line - 1} (byte {e.offset} of its content)" if line > 1 else "at all"
    return _Bad(
        index,
        f"{file.origin}:{line}",
        "corrupt_file",
        f"corrupt or truncated: cannot read the file {after}: {e.cause}",
        "replace the file with an intact copy (any records before this point were read)",
    )


def _read_jsonl(file: SourceFile, opts: ReadOptions) -> Iterator[Document | _Bad]:
    is_json = file.relpath.lower().removesuffix(".gz").removesuffix(".zst").endswith(".json")
    lineno = 0
    with _open(file) as f:
        try:
            for lineno, raw in enumerate(_lines(_chunks(f, file.relpath)), 1):
                if lineno == 1:  # a byte order mark, as some editors write, is not text
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                record = _jsonl_record(raw, lineno - 1, f"{file.origin}:{lineno}", opts, is_json)
                if record is not None:
                    yield record
        except _Broken as e:
            yield _corrupt(file, lineno, lineno + 1, e)


def _jsonl_record(
    raw: bytes, index: int, at: str, opts: ReadOptions, is_json: bool
) -> Document | _Bad | None:
    """The record on one line; None for a blank line, which holds no record."""
    field = opts.text_field
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _Bad(
            index,
            at,
            "not_utf8",
            f"not valid UTF-8 (byte {e.start}: {e.reason})",
            "re-encode the file as UTF-8",
        )
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        fix = "fix the line or remove it"
        if is_json and index == 0 and line.lstrip().startswith("["):
            fix = "curate reads .json as JSON lines; convert an array with `jq -c '.[]'`"
        return _Bad(index, at, "invalid_json", f"not valid JSON ({e.msg}, column {e.colno})", fix)
    if not isinstance(obj, dict):
        return _Bad(
            index,
            at,
            "not_an_object",
            f"expected a JSON object with a '{field}' field, got a {type(obj).__name__}",
            "write one object per line",
        )
    if field not in obj:
        fields = ", ".join(f"'{k}'" for k in list(obj)[:8]) or "none"
        return _Bad(
            index,
            at,
            "missing_field",
            f"no field '{field}' (this line has {fields})",
            "set the curate option text_field to the field that holds the text, or add it",
        )
    text = obj[field]
    if not isinstance(text, str):
        return _Bad(
            index,
            at,
            "not_a_string",
            f"field '{field}' is {json.dumps(text)[:40]} ({type(text).__name__}), not a string",
            "make it a string or remove the line",
        )
    if "\\u" in line:  # only a \\u escape can smuggle in a lone surrogate, which no encoder takes
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return _Bad(
                index,
                at,
                "not_utf8",
                f"field '{field}' holds a lone surrogate escape ({e.reason})",
                "write the character as a valid \\u pair or in UTF-8",
            )
    return Document(index, text)


def _read_parquet(file: SourceFile, opts: ReadOptions) -> Iterator[Document | _Bad]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    field, index = opts.text_field, 0
    with _open(file) as f:
        try:
            pf = pq.ParquetFile(f)
        except (OSError, pa.ArrowException) as e:
            yield _Bad(
                0,
                file.origin,
                "corrupt_file",
                f"not a readable Parquet file ({e})",
                "replace it with an intact copy",
            )
            return
        schema = pf.schema_arrow
        if field not in schema.names:
            raise StageError(
                f"{file.origin}: no column '{field}' (the columns are "
                f"{', '.join(schema.names[:20])}); set the curate option text_field to the "
                "column that holds the text"
            )
        type_ = schema.field(field).type
        is_binary = pa.types.is_binary(type_) or pa.types.is_large_binary(type_)
        if not (
            pa.types.is_null(type_)  # a column written from nothing but nulls
            or pa.types.is_string(type_)
            or pa.types.is_large_string(type_)
            or pa.types.is_string_view(type_)
            or is_binary
        ):
            raise StageError(
                f"{file.origin}: column '{field}' holds {type_}, not text; set text_field to "
                "a string column"
            )
        try:
            # Only the text column is read, one row group at a time (Parquet's unit of I/O), and
            # handed over in batches: memory holds one row group's texts, never the file.
            for batch in pf.iter_batches(batch_size=opts.batch_rows, columns=[field]):
                for value in batch.column(0).to_pylist():
                    yield _parquet_record(value, index, file.origin, field, is_binary)
                    index += 1
        except (OSError, pa.ArrowException) as e:
            yield _Bad(
                index,
                f"{file.origin}:row {index + 1}",
                "corrupt_file",
                f"cannot read past row {index} ({e})",
                "replace the file with an intact copy (the rows before this point were read)",
            )


def _parquet_record(
    value: str | bytes | None, index: int, origin: str, field: str, is_binary: bool
) -> Document | _Bad:
    at = f"{origin}:row {index + 1}"
    if value is None:
        return _Bad(index, at, "not_a_string", f"column '{field}' is null", "fill or drop the row")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            return _Bad(
                index, at, "not_utf8", f"not valid UTF-8 (byte {e.start})", "re-encode as UTF-8"
            )
    assert is_binary or isinstance(value, str)
    return Document(index, value)


def _read_text(file: SourceFile, opts: ReadOptions) -> Iterator[Document | _Bad]:
    """A whole file is one document, or each run of non-blank lines is one (its paragraphs).

    Line ends are normalised to "\\n" (Windows and old Mac files read like Unix ones); a line of
    only spaces and tabs separates paragraphs like an empty one.
    """
    paragraphs = opts.split_text_files == "paragraph"
    index, lineno = 0, 0
    current: list[str] = []  # the lines of the paragraph (or document) being read
    bad: _Bad | None = None  # its first undecodable line, if any
    with _open(file) as f:
        try:
            for lineno, raw in enumerate(_lines(_chunks(f, file.relpath)), 1):
                if lineno == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    if bad is None:
                        bad = _Bad(
                            index,
                            f"{file.origin}:{lineno}",
                            "not_utf8",
                            f"not valid UTF-8 (byte {e.start} of the line: {e.reason})",
                            "re-encode the file as UTF-8",
                        )
                    text = "x"  # stands in for the line: it is not blank
                for part in text.removesuffix("\r").split("\r"):
                    if not paragraphs or part.strip(" \t\f\v"):
                        current.append(part)
                    elif current or bad:
                        yield bad or Document(index, "\n".join(current))
                        index, current, bad = index + 1, [], None
        except _Broken as e:
            # The document (or paragraph) being read is incomplete: it is part of the lost tail.
            yield _corrupt(file, index, lineno + 1, e)
            return
    if bad is not None:
        yield bad
    elif "\n".join(current).strip():
        yield Document(index, "\n".join(current))
