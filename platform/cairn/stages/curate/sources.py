"""Reading raw inputs into documents: the only place that knows about file formats.

A source is a file or a directory (walked recursively, in sorted order, so the same tree always
yields the same documents in the same order). Every problem with the data is raised as a
`StageError` that names the file, the line and the fix, because the person reading it is the one
who owns the data, not a Cairn developer.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import StageError
from cairn.stages.base import InputArtifact

JSONL = (".jsonl",)
TEXT = (".txt", ".md", ".rst")
SUPPORTED = ", ".join(s + gz for s in JSONL + TEXT for gz in ("", ".gz"))

# A blank line: a newline, then only spaces or tabs, then a newline.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n")


@dataclass
class Document:
    """One document as read, before any cleaning."""

    source: str  # the input's name, the key of the per-source statistics
    origin: str  # the file it came from, as shown to users: "<input name>/<relative path>"
    position: int  # its index among all documents read from this input: the basis of its id
    text: str


@dataclass
class SourceFile:
    path: Path
    origin: str


def source_files(artifact: InputArtifact, label: str) -> tuple[list[SourceFile], list[str]]:
    """The readable files of one input, in a stable order, and the ones skipped as unsupported."""
    path = artifact.path
    if path.is_file():
        if _kind(path) is None:
            raise StageError(
                f"{label}: unsupported file type '{path.name}'; curate reads {SUPPORTED} "
                "(convert the file, or point the source at a supported one)"
            )
        return [SourceFile(path, label)], []
    if not path.is_dir():
        raise StageError(f"{label}: {path} does not exist; check the source's path")
    files, skipped = [], []
    for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
        rel = p.relative_to(path).as_posix()
        # Hidden files and folders (.git, .DS_Store, editor swap files) are never data.
        if not p.is_file() or any(part.startswith(".") for part in Path(rel).parts):
            continue
        if _kind(p) is None:
            skipped.append(rel)
        else:
            files.append(SourceFile(p, f"{label}/{rel}"))
    return files, skipped


def read_file(
    file: SourceFile, text_field: str, split_text_files: str, check_cancelled: Callable[[], None]
) -> Iterator[str]:
    """The raw texts of one file, in file order."""
    if _kind(file.path) == "jsonl":
        yield from _read_jsonl(file, text_field, check_cancelled)
    else:
        yield from _read_text(file, split_text_files)


def _kind(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(JSONL):
        return "jsonl"
    if name.endswith(TEXT):
        return "text"
    return None


def _open(path: Path):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_jsonl(
    file: SourceFile, text_field: str, check_cancelled: Callable[[], None]
) -> Iterator[str]:
    where, lineno = file.origin, 0
    try:
        with _open(file.path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno % 10_000 == 0:
                    check_cancelled()
                text = _jsonl_text(raw, f"{where}:{lineno}", text_field, first=lineno == 1)
                if text is not None:
                    yield text
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz, or an unreadable file
        raise StageError(f"{where}:{lineno + 1}: cannot read the file ({e}); replace it") from e


def _jsonl_text(raw: bytes, at: str, text_field: str, first: bool) -> str | None:
    if first:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some editors write
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StageError(
            f"{at}: not valid UTF-8 (byte {e.start}: {e.reason}); re-encode the file as UTF-8"
        ) from e
    if not line.strip():
        return None  # blank lines (a trailing one, say) hold no document
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise StageError(
            f"{at}: not valid JSON ({e.msg}, column {e.colno}); fix the line or remove it"
        ) from e
    if not isinstance(obj, dict):
        raise StageError(
            f"{at}: expected a JSON object with a '{text_field}' field, got a "
            f"{type(obj).__name__}; write one object per line"
        )
    if text_field not in obj:
        fields = ", ".join(f"'{k}'" for k in list(obj)[:8]) or "none"
        raise StageError(
            f"{at}: no field '{text_field}' (this line has {fields}); set the curate option "
            "text_field to the field that holds the text, or add it to the line"
        )
    text = obj[text_field]
    if not isinstance(text, str):
        raise StageError(
            f"{at}: field '{text_field}' is {json.dumps(text)[:40]} ({type(text).__name__}), "
            "not a string; make it a string or remove the line"
        )
    return text


def _read_text(file: SourceFile, split_text_files: str) -> Iterator[str]:
    try:
        with _open(file.path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise StageError(f"{file.origin}: cannot read the file ({e}); replace it") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise StageError(
            f"{file.origin}:{line}: not valid UTF-8 ({e.reason}); re-encode the file as UTF-8"
        ) from e
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if split_text_files == "document":
        yield text
        return
    for paragraph in _PARAGRAPH_BREAK.split(text):
        if paragraph.strip():  # blank runs between paragraphs are separators, not documents
            yield paragraph
