"""The first pass of curate, run on Ray Data workers: one file in, one row per record out.

Every document is read, scrubbed of PII, normalised and put through the per-document filters
(length, language, quality, decontamination) where it was read, so the driver never sees raw
files, only a stream of small Arrow batches. A row is written for every record, kept or not,
so that the driver can count what each filter removed, per source, without a second pass; the
text travels in full only for kept documents (a removed one carries a short excerpt, for the
data card's examples).

Rows carry the two keys that later passes need: the document's `order` (file number in the high
32 bits, position in the file in the low 32: lower means earlier in source order, which decides
which copy dedup keeps) and the document's stable id (`sources.doc_id`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from cairn.errors import StageError
from cairn.stages.curate import language, length, minhash, pii, quality, readers, sources
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
