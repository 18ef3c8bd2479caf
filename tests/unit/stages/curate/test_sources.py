"""Tests of how curate reads its sources (`sources`, `readers`, `streams`): formats,
compression, fsspec sources, stable document ids, and what happens to every kind of malformed
record."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from cairn.artifacts.store import ArtifactStore
from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.curate import readers, sources, streams
from cairn.stages.curate.readers import Document, ReadOptions, Skipped
from cairn.stages.curate.sources import SourceFile

TEXTS = [f"Document {i}: the {w} walked to the market." for i, w in enumerate("abcdefg")]
DIGEST = "a" * 64


def jsonl(texts: list[str], field: str = "text") -> bytes:
    return "".join(json.dumps({field: t, "n": i}) + "\n" for i, t in enumerate(texts)).encode()


def artifact(path: Path | str, metadata: dict | None = None, digest: str = DIGEST):
    return InputArtifact(
        path=Path(path), type=ArtifactType.RAW, digest=digest, metadata=metadata or {}
    )


def one(path: Path) -> SourceFile:
    files, skipped = sources.list_files(artifact(path), "src")
    assert len(files) == 1 and not skipped
    return files[0]


def read(file: SourceFile, **opts) -> list[Document | Skipped]:
    return list(readers.read_documents(file, ReadOptions(**opts)))


def texts_of(records: list) -> list[str]:
    return [r.text for r in records if isinstance(r, Document)]


def write_parquet(path: Path, texts: list, rows_per_group: int = 3, **columns) -> Path:
    pq.write_table(pa.table({"text": texts, **columns}), path, row_group_size=rows_per_group)
    return path


# --- formats ----------------------------------------------------------------------------------

FORMATS = {
    "a.jsonl": lambda: jsonl(TEXTS),
    "a.ndjson": lambda: jsonl(TEXTS),
    "a.json": lambda: jsonl(TEXTS),
    "a.jsonl.gz": lambda: gzip.compress(jsonl(TEXTS)),
    "a.jsonl.zst": lambda: zstandard.ZstdCompressor().compress(jsonl(TEXTS)),
    "a.txt": lambda: "\n\n".join(TEXTS).encode(),
    "a.md": lambda: ("\r\n \t\r\n".join(TEXTS) + "\r\n").encode(),  # Windows ends, blank-ish
    "a.rst.gz": lambda: gzip.compress("\n\n\n".join(TEXTS).encode()),
    "a.txt.zst": lambda: zstandard.ZstdCompressor().compress("\n\n".join(TEXTS).encode()),
}


@pytest.mark.parametrize("name", [*FORMATS, "a.parquet"])
def test_every_format_reads_the_same_documents(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".parquet"):
        write_parquet(path, TEXTS)
    else:
        path.write_bytes(FORMATS[name]())
    records = read(one(path), split_text_files="paragraph")
    assert records == [Document(i, t) for i, t in enumerate(TEXTS)]


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_lines_and_paragraphs_survive_any_chunk_boundary(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(streams, "_CHUNK", chunk)
    monkeypatch.setattr(streams, "_ZSTD_IN", chunk)
    monkeypatch.setattr(streams, "_ZSTD_PIECE", max(1, chunk // 2))
    long = "word " * 200  # longer than many chunks
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst"):
        (tmp_path / name).write_bytes(FORMATS[name.replace("b.", "a.").replace("c.", "a.")]())
    (tmp_path / "d.txt").write_text(f"{long}\nsecond line\n\n\nlast")
    files, _ = sources.list_files(artifact(tmp_path), "src")
    for f in files[:3]:
        assert texts_of(read(f)) == TEXTS
    assert read(files[3], split_text_files="paragraph") == [
        Document(0, f"{long}\nsecond line"),
        Document(1, "last"),
    ]


def test_a_text_file_is_one_document_unless_split(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbfTitle\r\n\r\nBody line one\rBody line two\n")
    assert read(one(path)) == [Document(0, "Title\n\nBody line one\nBody line two")]
    assert read(one(path), split_text_files="paragraph") == [
        Document(0, "Title"),
        Document(1, "Body line one\nBody line two"),
    ]
    (tmp_path / "a.txt").write_text(" \n\n\t\n")  # only whitespace: no document, no error
    assert read(one(path)) == [] and read(one(path), split_text_files="paragraph") == []


def test_parquet_is_read_in_record_batches(tmp_path, monkeypatch):
    texts = [f"row {i}" for i in range(25)]
    path = write_parquet(tmp_path / "a.parquet", texts, rows_per_group=4, other=list(range(25)))
    seen: list[tuple[int, list[str] | None]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, batch_size=65536, columns=None, **kw):
        for batch in real(self, batch_size=batch_size, columns=columns, **kw):
            seen.append((batch.num_rows, columns))
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    assert texts_of(read(one(path), batch_rows=3)) == texts
    assert len(seen) >= 9 and max(n for n, _ in seen) <= 3  # never the whole file at once
    assert all(cols == ["text"] for _, cols in seen)  # only the text column is read


def test_parquet_without_the_column_names_the_columns_it_has(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": ["x"], "id": [1]}), path)
    with pytest.raises(
        StageError,
        match=r"^src: no column 'text' \(the columns are body, id\); set the curate option text_field",
    ):
        read(one(path), on_malformed="skip")
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(StageError, match=r"column 'text' holds int64, not text"):
        read(one(path))
    pq.write_table(pa.table({"text": [b"caf\xc3\xa9", b"\xff"]}), path)  # binary: decoded
    assert [type(r).__name__ for r in read(one(path), on_malformed="skip")] == [
        "Document",
        "Skipped",
    ]


# --- listing ----------------------------------------------------------------------------------


def test_listing_is_sorted_relative_and_skips_hidden_and_unsupported(tmp_path):
    for rel in ("b/z.jsonl", "a.txt", "b/a.parquet.gz", "data.csv", ".git/x.txt", "b/.swp.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    files, skipped = sources.list_files(artifact(tmp_path), "plays")
    assert [f.relpath for f in files] == ["a.txt", "b/z.jsonl"]
    assert [f.origin for f in files] == ["plays/a.txt", "plays/b/z.jsonl"]
    assert skipped == ["b/a.parquet.gz", "data.csv"]
    assert files[0].size == 1 and files[0].url == str(tmp_path / "a.txt")
    assert sources.source_files is sources.list_files  # the old name keeps working


def test_a_single_file_source_is_named_by_its_label(tmp_path):
    path = tmp_path / "plays.jsonl"
    path.write_bytes(jsonl(TEXTS))
    (f,), _ = sources.list_files(artifact(path), "data/plays.jsonl")
    assert (f.relpath, f.origin) == ("plays.jsonl", "data/plays.jsonl")


def test_missing_empty_and_unsupported_sources_are_clear(tmp_path):
    with pytest.raises(StageError, match=r"^src: .*nowhere does not exist; check the source"):
        sources.list_files(artifact(tmp_path / "nowhere"), "src")
    (tmp_path / "t.csv").write_text("text\n")
    with pytest.raises(StageError, match=r"unsupported file type 't\.csv'; curate reads \.jsonl"):
        sources.list_files(artifact(tmp_path / "t.csv"), "src")
    (tmp_path / "p.parquet.gz").write_bytes(b"x")
    with pytest.raises(StageError, match="Parquet compresses its own pages"):
        sources.list_files(artifact(tmp_path / "p.parquet.gz"), "src")
    (tmp_path / "empty").mkdir()
    assert sources.list_files(artifact(tmp_path / "empty"), "src") == ([], [])
    for name, data in (("e.jsonl", b"\n\n"), ("e.jsonl.gz", b""), ("e.parquet", None)):
        if data is None:
            write_parquet(tmp_path / name, [])
        else:
            (tmp_path / name).write_bytes(data)
        assert read(one(tmp_path / name), on_malformed="skip") == []  # no records, no skips


# --- ids --------------------------------------------------------------------------------------


def ids(src: Path, digest: str = DIGEST) -> dict[tuple[str, int], str]:
    files, _ = sources.list_files(artifact(src, digest=digest), "src")
    return {
        (f.relpath, r.index): sources.doc_id(digest, f.relpath, r.index)
        for f in files
        for r in read(f, on_malformed="skip")
    }


def test_ids_are_stable_per_file_and_change_with_the_source(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(jsonl(TEXTS))
    first = ids(tmp_path)
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in first.values())
    assert len(set(first.values())) == len(TEXTS)
    assert ids(tmp_path) == first
    # A file added before it in the walk does not move its documents (no global position).
    (tmp_path / "a.jsonl").write_bytes(jsonl(["new one", "new two"]))
    after = ids(tmp_path)
    assert {k: v for k, v in after.items() if k[0] == "b.jsonl"} == first
    assert len(set(after.values())) == len(TEXTS) + 2
    # A changed source has a new digest, hence new ids for every document.
    assert not set(ids(tmp_path, "b" * 64).values()) & set(after.values())


def test_a_skipped_line_keeps_its_place(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "one"}\n\n{"text": broken}\n{"text": "four"}\n')
    assert read(one(path), on_malformed="skip") == [
        Document(0, "one"),
        Skipped(2, "src:3", "invalid_json", "not valid JSON (Expecting value, column 10)"),
        Document(3, "four"),
    ]


# --- malformed records ------------------------------------------------------------------------

GOOD = b'{"text": "before"}\n'
AFTER = b'{"text": "after"}\n'
MALFORMED = {
    # name: (file, bytes, reason, the error's message, or None)
    "broken json": (
        "x.jsonl",
        GOOD + b'{"text": "a" "b"}\n' + AFTER,
        "invalid_json",
        r"x\.jsonl:2: not valid JSON \(Expecting ',' delimiter, column 14\); fix the line",
    ),
    "not an object": (
        "x.jsonl",
        GOOD + b'["text"]\n' + AFTER,
        "not_an_object",
        r"x\.jsonl:2: expected a JSON object with a 'text' field, got a list",
    ),
    "missing field": (
        "x.jsonl",
        GOOD + b'{"body": "b", "id": 3}\n' + AFTER,
        "missing_field",
        r"x\.jsonl:2: no field 'text' \(this line has 'body', 'id'\); set the curate option "
        "text_field",
    ),
    "not a string": (
        "x.jsonl",
        GOOD + b'{"text": 17}\n' + AFTER,
        "not_a_string",
        r"x\.jsonl:2: field 'text' is 17 \(int\), not a string",
    ),
    "null text": (
        "x.jsonl",
        GOOD + b'{"text": null}\n' + AFTER,
        "not_a_string",
        r"x\.jsonl:2: field 'text' is null \(NoneType\)",
    ),
    "bad utf-8": (
        "x.jsonl",
        GOOD + b'{"text": "caf\xe9"}\n' + AFTER,
        "not_utf8",
        r"x\.jsonl:2: not valid UTF-8 \(byte 13: invalid continuation byte\); re-encode",
    ),
    "lone surrogate": (
        "x.jsonl",
        GOOD + b'{"text": "\\ud83d"}\n' + AFTER,
        "not_utf8",
        r"x\.jsonl:2: field 'text' holds a lone surrogate escape",
    ),
    "bad utf-8 in text": (
        "x.txt",
        b"before\n\nbad \xff byte\nsame paragraph\n\nafter\n",
        "not_utf8",
        r"x\.txt:3: not valid UTF-8 \(byte 4 of the line",
    ),
    "null in parquet": (
        "x.parquet",
        None,
        "not_a_string",
        r"x\.parquet:row 2: column 'text' is null",
    ),
}


def write_malformed(tmp_path: Path, name: str, data: bytes | None) -> Path:
    path = tmp_path / name
    if data is None:
        write_parquet(path, ["before", None, "after"])
    else:
        path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_record_is_an_error_or_a_counted_skip(tmp_path, case):
    name, data, reason, message = MALFORMED[case]
    write_malformed(tmp_path, name, data)
    files, _ = sources.list_files(artifact(tmp_path), "src")
    with pytest.raises(StageError, match="^src/" + message) as error:
        read(files[0], split_text_files="paragraph")
    records = read(files[0], split_text_files="paragraph", on_malformed="skip")
    assert [type(r).__name__ for r in records] == ["Document", "Skipped", "Document"]
    assert texts_of(records) == ["before", "after"]
    skipped = records[1]
    assert isinstance(skipped, Skipped) and skipped.reason == reason and skipped.index == 1
    line = {"x.txt": "3", "x.parquet": "row 2"}.get(name, "2")
    assert skipped.where == f"src/{name}:{line}"
    # The counted skip says what the error says, less the fix.
    assert str(error.value).startswith(f"{skipped.where}: {skipped.detail}; ")


def test_a_json_array_file_gets_a_hint(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "a"}\n]\n')
    with pytest.raises(StageError, match=r"^src:1: not valid JSON .*jq -c"):
        read(one(path))


@pytest.mark.parametrize("name", ["a.jsonl.gz", "a.jsonl.zst", "a.txt.gz"])
def test_a_truncated_compressed_file_keeps_what_came_before(tmp_path, name):
    many = [f"line {i} " + "filler " * 20 for i in range(6000)]
    raw = jsonl(many) if ".jsonl" in name else "\n\n".join(many).encode()
    whole = gzip.compress(raw) if name.endswith(".gz") else zstandard.ZstdCompressor().compress(raw)
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) // 2])
    file = one(path)
    with pytest.raises(StageError, match=r"^src:\d+: corrupt or truncated: .*replace the file"):
        read(file, split_text_files="paragraph")
    records = read(file, split_text_files="paragraph", on_malformed="skip")
    *docs, last = records
    assert 0 < len(docs) < len(many) and all(isinstance(d, Document) for d in docs)
    assert texts_of(docs) == many[: len(docs)]  # an intact prefix, no partial last record
    assert isinstance(last, Skipped) and last.reason == "corrupt_file"
    assert last.index == len(docs)
    if ".jsonl" in name:  # for JSON lines, the line where it broke
        assert last.where == f"src:{len(docs) + 1}"
    assert re.search(r"after line \d+ \(byte \d+ of its content\)", last.detail)


def test_garbage_that_is_not_compressed_at_all_is_one_skip(tmp_path):
    for name in ("a.jsonl.gz", "a.jsonl.zst"):
        path = tmp_path / name
        path.write_bytes(jsonl(TEXTS))  # named compressed, but plain
        (record,) = read(one(path), on_malformed="skip")
        assert isinstance(record, Skipped) and record.reason == "corrupt_file"
        assert (record.index, record.where) == (0, "src:1") and "at all" in record.detail
        path.unlink()
    path = tmp_path / "a.parquet"
    path.write_bytes(b"PAR1 not really")
    (record,) = read(one(path), on_malformed="skip")
    assert isinstance(record, Skipped) and record.reason == "corrupt_file"


def test_a_zstd_file_of_several_frames_is_read_whole(tmp_path):
    c = zstandard.ZstdCompressor(write_checksum=True)
    (tmp_path / "a.jsonl.zst").write_bytes(
        c.compress(jsonl(TEXTS[:3])) + c.compress(jsonl(TEXTS[3:]))
    )
    assert texts_of(read(one(tmp_path / "a.jsonl.zst"))) == TEXTS


# --- fsspec sources ---------------------------------------------------------------------------


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"memory://corpus-{uuid.uuid4().hex}"
    yield fs, root
    fs.rm(root, recursive=True)


def test_a_memory_uri_source_is_read_where_it_lies(memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/b/two.jsonl.gz", gzip.compress(jsonl(TEXTS[3:])))
    fs.pipe(f"{root}/a.jsonl", jsonl(TEXTS[:3]))
    fs.pipe(f"{root}/.hidden.txt", b"no")
    fs.pipe(f"{root}/notes.csv", b"no")
    art = artifact("/not/a/local/copy", {"source_uri": root})
    files, skipped = sources.list_files(art, root)
    assert [f.relpath for f in files] == ["a.jsonl", "b/two.jsonl.gz"] and skipped == ["notes.csv"]
    assert all(f.url.startswith("memory://") for f in files)
    assert [t for f in files for t in texts_of(read(f))] == TEXTS
    (single,), _ = sources.list_files(artifact("/x", {"source_uri": f"{root}/a.jsonl"}), "a")
    assert (single.relpath, single.origin) == ("a.jsonl", "a")
    with pytest.raises(StageError, match=r"missing does not exist; check the source's URI"):
        sources.list_files(artifact("/x", {"source_uri": f"{root}/missing"}), "m")


def test_a_file_uri_source_is_read_like_a_path(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_bytes(jsonl(TEXTS))
    by_uri, _ = sources.list_files(artifact("/x", {"source_uri": f"file://{tmp_path}/d"}), "d")
    by_path, _ = sources.list_files(artifact(tmp_path / "d"), "d")
    assert by_uri == by_path and texts_of(read(by_uri[0])) == TEXTS


def test_a_remote_single_file_source_downloaded_by_the_engine_keeps_its_name(tmp_path, memory_root):
    # Without source_uri (a stage run by hand, or an engine that only downloads), the copy the
    # engine makes must still say what format the file is in.
    fs, root = memory_root
    fs.pipe(f"{root}/plays.jsonl.gz", gzip.compress(jsonl(TEXTS)))
    store = ArtifactStore(tmp_path / "store", cache_dir=tmp_path / "cache")
    local = store.local_path(f"{root}/plays.jsonl.gz", "d1")
    assert local.name == "plays.jsonl.gz"
    assert store.local_path(f"{root}/plays.jsonl.gz", "d1") == local  # cached
    assert texts_of(read(one(local))) == TEXTS


def test_everything_a_ray_task_receives_pickles(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(GOOD + b"{bad\n")
    file = one(path)
    opts = ReadOptions(text_field="body", split_text_files="paragraph", on_malformed="skip")
    records = read(file, on_malformed="skip")
    for thing in (file, opts, *records):
        assert pickle.loads(pickle.dumps(thing)) == thing
    with pytest.raises(ValueError, match="on_malformed"):
        ReadOptions(on_malformed="ignore")  # type: ignore[arg-type]


def test_the_old_interface_still_yields_texts_and_raises(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl(TEXTS) + b"{bad\n")
    calls = []
    texts = readers.read_file(one(path), "text", "document", lambda: calls.append(1))
    assert [next(texts) for _ in TEXTS] == TEXTS
    with pytest.raises(StageError, match=r"src:8: not valid JSON"):
        next(texts)


def test_very_repetitive_zstd_is_decoded_in_bounded_pieces(tmp_path):
    # 63 MB that compresses to 42 KB: one 64 KiB read of it would decode to the whole file.
    raw = jsonl(TEXTS) * 150_000
    path = tmp_path / "a.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
    with open(path, "rb") as f:
        sizes = [len(chunk) for chunk in streams._zstd(f)]
    assert sum(sizes) == len(raw) and max(sizes) < 16 << 20
