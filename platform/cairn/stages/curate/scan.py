"""The scan phase, curate's first pass: one Ray Data task per file, one row per record out.

Every document is read, scrubbed of PII, normalised and put through the per-document filters
(length, language, quality, decontamination) where it was read, so the driver never sees raw
files, only a stream of small Arrow batches. A row is written for every record, kept or not,
so that the driver can count what each filter removed, per source, without a second pass; the
text travels in full only for kept documents (a removed one carries a short excerpt, for the
data card's examples).

Rows carry the two keys that later passes need: the document's `order` (file number in the high
32 bits, position in the file in the low 32: lower means earlier in source order, which decides
which copy dedup keeps) and the document's stable id (`sources.doc_id`).

`scan_file` is the worker's half. `run` is the driver's: it streams the rows back in order,
counts them per source and filter (and into the data card), and writes the kept documents to the
scratch file the dedup and split phases read, and the contaminated ones to decontamination.jsonl.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cairn.errors import StageError
from cairn.stage import Context
from cairn.stages.curate import (
    decontam,
    language,
    length,
    minhash,
    pii,
    quality,
    raydata,
    readers,
    scratch,
    sources,
)
from cairn.stages.curate.card import CardStats
from cairn.stages.curate.config import CurateConfig
from cairn.stages.curate.text import digest, normalise

BATCH = 1024  # rows per output batch: small enough to stream, big enough to vectorise MinHash
EXCERPT = 400  # characters of a removed document kept for the data card's examples
KEPT = ""  # the `reason` of a kept document
SKIPPED = "skipped"  # the `reason` of a malformed record (counted by cause in `detail`)
FAILED = "error"  # the `reason` of a row carrying a file's StageError (its text is the message)


@dataclass(frozen=True)
class FileTask:
    """One file to scan: which source it belongs to, where it sits in the stream."""

    number: int  # position of the file among all files of all sources, in source order
    source: int  # index of its source
    source_digest: str
    file: sources.SourceFile


def order_of(file_number: int, index: int) -> int:
    return (file_number << 32) | index


def file_tasks(srcs: list[sources.Source], ctx: Context) -> list[FileTask]:
    """One task per readable file of every source, numbered in source order."""
    tasks: list[FileTask] = []
    for i, s in enumerate(srcs):
        label = s.artifact.name or str(s.artifact.path)
        files, skipped = sources.list_files(s.artifact, label)
        if skipped:
            ctx.log(
                f"{label}: skipped {len(skipped)} unsupported file(s): {', '.join(skipped[:5])}"
            )
        if not files:
            raise StageError(
                f"{label}: no documents in this source (no readable file"
                + (f"; {len(skipped)} skipped as unsupported" if skipped else "")
                + f"); curate reads {sources.SUPPORTED}: check the path and the files"
            )
        s.files = len(files)
        first = len(tasks)
        tasks += [FileTask(first + k, i, s.artifact.digest, f) for k, f in enumerate(files)]
    return tasks


def run(
    config: CurateConfig,
    srcs: list[sources.Source],
    index: decontam.EvalIndex | None,
    stats: CardStats,
    kept_path: Path,
    out: Path,
    ctx: Context,
    phases: int,
) -> None:
    """Read and filter every file on Ray Data; kept documents go to `kept_path` (Parquet),
    documents matching an eval item to decontamination.jsonl. Progress is reported as a part of
    the first of `phases`."""
    import ray

    started = time.monotonic()
    tasks = file_tasks(srcs, ctx)

    def scan_batch(batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for number in batch["task"]:
            yield from scan_file(tasks[int(number)], config, index)

    ds = ray.data.range(len(tasks), override_num_blocks=len(tasks)).map_batches(
        lambda b: {"task": b["id"]}, batch_size=None
    )
    ds = ds.map_batches(scan_batch, batch_size=1, **raydata.on_this_node())
    writer: pq.ParquetWriter | None = None
    seen_files = 0
    with open(out / "decontamination.jsonl", "w", encoding="utf-8") as flags:
        for table in raydata.batches(ds):
            ctx.check_cancelled()
            _count(table, srcs, stats, flags)
            kept = table.filter(pa.compute.equal(table["reason"], KEPT))
            if kept.num_rows:
                extra = ["exact"] + (["bands"] if "bands" in kept.column_names else [])
                keep = kept.select(scratch.KEPT_COLUMNS + extra)
                writer = writer or pq.ParquetWriter(kept_path, keep.schema)
                writer.write_table(keep)
            files_done = int(table["order"][-1].as_py()) >> 32
            if files_done > seen_files:
                seen_files = files_done
                ctx.progress(
                    files_done / len(tasks), phases, f"scanned {files_done}/{len(tasks)} files"
                )
    if writer is None:
        pq.write_table(pa.table({c: pa.array([], pa.int64()) for c in ("order",)}), kept_path)
    else:
        writer.close()
    if index is None:
        (out / "decontamination.jsonl").unlink()
    for s in srcs:
        s.stats.documents_out = s.stats.documents_in - sum(s.stats.removed.values())
        if s.stats.documents_in == 0:
            skipped = sum(s.stats.skipped.values())
            raise StageError(
                f"{s.artifact.name or s.artifact.path}: no documents in this source "
                f"({s.files} file(s) read"
                + (f", {skipped} malformed record(s) skipped" if skipped else "")
                + "); check the path, the files and text_field"
            )
    ctx.log(f"scanned {len(tasks)} file(s) on Ray Data in {time.monotonic() - started:.1f}s")


def _count(table: pa.Table, srcs: list[sources.Source], stats: CardStats, flags: Any) -> None:
    """Count one scanned batch: documents in, removed by filter, skipped, PII, contamination."""
    reasons = table["reason"].to_pylist()
    if FAILED in reasons:
        raise StageError(table["text"][reasons.index(FAILED)].as_py())
    source = table["source"].to_numpy()
    read = np.array([r != SKIPPED for r in reasons])
    raw_chars, raw_words = table["raw_chars"].to_numpy(), table["raw_words"].to_numpy()
    for i in np.unique(source):
        mine = (source == i) & read
        srcs[i].stats.documents_in += int(mine.sum())
        stats.add_input(srcs[i].name, raw_chars[mine], raw_words[mine])
    for j in np.flatnonzero(np.array([r != KEPT for r in reasons])):
        row = table.slice(int(j), 1).to_pylist()[0]
        src, reason = srcs[row["source"]], row["reason"]
        if reason == SKIPPED:  # malformed: counted by cause, with where it was, never silent
            src.stats.skipped[row["skip"]] = src.stats.skipped.get(row["skip"], 0) + 1
            stats.add_removed(src.name, f"malformed ({row['skip']})", row["doc_id"], row["text"])
        else:
            src.stats.removed[reason] += 1
            stats.add_removed(src.name, reason, row["doc_id"], row["text"], chars=row["raw_chars"])
    for j in np.flatnonzero(pa.compute.not_equal(table["pii"], "").to_numpy(zero_copy_only=False)):
        row = table.slice(int(j), 1).to_pylist()[0]
        pii = srcs[row["source"]].stats.pii
        if pii is not None:
            for kind, n in json.loads(row["pii"]).items():
                pii[kind] = pii.get(kind, 0) + n
    for j in np.flatnonzero(
        pa.compute.not_equal(table["contaminated"], "").to_numpy(zero_copy_only=False)
    ):
        row = table.slice(int(j), 1).to_pylist()[0]
        action = "remove" if row["reason"] == "decontamination" else "flag"
        items = row["contaminated"].split("\n")
        line = decontam.record(row["doc_id"], srcs[row["source"]].name, items, action)
        flags.write(json.dumps(line) + "\n")


def scan_file(
    task: FileTask,
    config: CurateConfig,
    index: Any | None,  # decontam.EvalIndex, or None when the step has no eval_tasks
) -> Iterator[pa.Table]:
    """Arrow batches of rows for every record of one file, in file order."""
    opts = readers.ReadOptions(
        text_field=config.text_field,
        split_text_files=config.split_text_files,
        on_malformed=config.on_malformed,
    )
    rows: list[dict[str, Any]] = []
    try:
        for record in readers.read_documents(task.file, opts):
            rows.append(_row(task, record, config, index))
            if len(rows) == BATCH:
                yield _table(rows, config)
                rows = []
    except StageError as e:
        # Sent as a row, not raised: the driver raises the error of the first broken file in
        # source order, so a run with two broken files always reports the same one.
        failed = readers.Skipped(2**32 - 1, task.file.origin, "corrupt_file", "")
        rows.append({**_row(task, failed, config, index), "reason": FAILED, "text": str(e)})
    if rows:
        yield _table(rows, config)


def _row(task: FileTask, record: Any, config: CurateConfig, index: Any | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "order": order_of(task.number, record.index),
        "doc_id": sources.doc_id(task.source_digest, task.file.relpath, record.index),
        "source": task.source,
        "origin": task.file.origin,
        "pii": "",
        "contaminated": "",
        "raw_chars": 0,
        "raw_words": 0,
        "chars": 0,
        "sha": b"",
    }
    if isinstance(record, readers.Skipped):
        detail = f"{record.where}: {record.detail}"
        return {**row, "reason": SKIPPED, "text": detail, "skip": record.reason}
    raw = record.text
    row["raw_chars"], row["raw_words"] = len(raw), len(raw.split())
    if config.pii:
        raw, found = pii.scrub(raw)
        row["pii"] = json.dumps(found, sort_keys=True) if found else ""
    text = normalise(raw)
    reason = length.check(text, config)
    if reason is None and config.language is not None:
        reason = language.check(text, config.language)
    if reason is None and config.quality is not None:
        reason = quality.first_failure(raw, config.quality)
    if reason is None and index is not None:
        items = index.matches(text)
        if items:
            row["contaminated"] = "\n".join(items)
            if config.decontaminate.action == "remove":
                reason = "decontamination"
    if reason is not None:
        return {**row, "reason": reason, "text": raw[:EXCERPT], "skip": ""}
    row["chars"] = len(text)
    row["sha"] = digest(text)
    return {**row, "reason": KEPT, "text": text, "skip": ""}


def _table(rows: list[dict[str, Any]], config: CurateConfig) -> pa.Table:
    cols: dict[str, Any] = {
        "order": pa.array([r["order"] for r in rows], pa.int64()),
        "doc_id": pa.array([r["doc_id"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.int32()),
        "origin": pa.array([r["origin"] for r in rows], pa.string()),
        "reason": pa.array([r["reason"] for r in rows], pa.string()),
        "skip": pa.array([r["skip"] for r in rows], pa.string()),
        "text": pa.array([r["text"] for r in rows], pa.large_string()),
        "raw_chars": pa.array([r["raw_chars"] for r in rows], pa.int64()),
        "raw_words": pa.array([r["raw_words"] for r in rows], pa.int64()),
        "chars": pa.array([r["chars"] for r in rows], pa.int64()),
        "pii": pa.array([r["pii"] for r in rows], pa.string()),
        "contaminated": pa.array([r["contaminated"] for r in rows], pa.string()),
    }
    sha = [r["sha"] or b"\0" * 32 for r in rows]
    digests = np.frombuffer(b"".join(sha), dtype=np.uint8).reshape(len(rows), 32)
    # The first 8 bytes place a document in train or validation (below val_fraction: validation); the next 8
    # are its exact-dedup key, so both come from one sha256 of the normalised text.
    cols["split_score"] = pa.array(
        digests[:, :8].copy().view(">u8").ravel().astype(np.float64) / 2**64, pa.float64()
    )
    cols["exact"] = pa.array(digests[:, 8:16].copy().view(">u8").ravel().astype(np.uint64))
    if config.fuzzy_dedup is not None:
        kept = [i for i, r in enumerate(rows) if r["reason"] == KEPT]
        bands = np.zeros((len(rows), config.fuzzy_dedup.bands), dtype=np.uint64)
        if kept:
            bands[kept] = minhash.signatures([rows[i]["text"] for i in kept], config.fuzzy_dedup)
        cols["bands"] = pa.FixedSizeListArray.from_arrays(
            pa.array(bands.ravel(), pa.uint64()), config.fuzzy_dedup.bands
        )
    return pa.table(cols)
