"""Reading one file of a source into documents: the only place that knows about file formats.

Everything is read as a stream (line by line, or Parquet record batch by batch), so a file of any
size fits in a worker. Curate reads each file in its own Ray task, so nothing here depends on
other files: a document's `index` is its position within its file (its line for JSON lines, its
row for Parquet, its paragraph for text), counted whether or not the record was readable, which
keeps ids (`sources.doc_id`) stable.

A broken record is the data owner's problem, so it is reported to them: with
`on_malformed="error"` as a `StageError` naming the file, the line, what is wrong and the fix;
with "skip" as a `Skipped` record (where, reason, detail) that the pipeline counts. Nothing is
dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, get_args

from cairn.errors import StageError
from cairn.stages.curate import streams
from cairn.stages.curate.sources import SUPPORTED, SourceFile, kind

# Why a record was skipped: the keys of the per-source skip counts.
Reason = Literal[
    "not_utf8", "invalid_json", "not_an_object", "missing_field", "not_a_string", "corrupt_file"
]
REASONS: tuple[str, ...] = get_args(Reason)


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


def read_documents(file: SourceFile, opts: ReadOptions) -> Iterator[Document | Skipped]:
    """Every record of one file, in file order: a Document, or (with on_malformed="skip") a
    Skipped. With on_malformed="error" the first broken record raises a StageError."""
    reader_kind = kind(file.relpath)
    if reader_kind is None:
        raise StageError(f"{file.origin}: unsupported file type; curate reads {SUPPORTED}")
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "text": _read_text}[reader_kind]
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


def _corrupt(file: SourceFile, index: int, line: int, e: streams.Broken) -> _Bad:
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
    with streams.open_file(file) as f:
        try:
            for lineno, raw in enumerate(streams.lines(streams.chunks(f, file.relpath)), 1):
                if lineno == 1:  # a byte order mark, as some editors write, is not text
                    raw = raw.removeprefix(b"\xef\xbb\xbf")
                record = _jsonl_record(raw, lineno - 1, f"{file.origin}:{lineno}", opts, is_json)
                if record is not None:
                    yield record
        except streams.Broken as e:
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
    with streams.open_file(file) as f:
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
    with streams.open_file(file) as f:
        try:
            for lineno, raw in enumerate(streams.lines(streams.chunks(f, file.relpath)), 1):
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
        except streams.Broken as e:
            # The document (or paragraph) being read is incomplete: it is part of the lost tail.
            yield _corrupt(file, index, lineno + 1, e)
            return
    if bad is not None:
        yield bad
    elif "\n".join(current).strip():
        yield Document(index, "\n".join(current))
