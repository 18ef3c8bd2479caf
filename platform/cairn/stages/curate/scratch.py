"""The files the phases hand each other in the step's scratch directory, and reading them back.

No phase holds the corpus in memory: the scan writes the kept documents to `kept.parquet` with
their dedup keys, the split writes the survivors to `docs.parquet` with their split, tokenize
writes one token file per split (`tokens-<split>.bin`) that packing reads. Each is read back
batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# What the scan keeps of a document for the split (besides the dedup keys `exact` and `bands`).
KEPT_COLUMNS = ["order", "doc_id", "source", "origin", "text", "chars", "split_score"]


def batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """A Parquet file's record batches (of `columns`), none for an empty file."""
    f = pq.ParquetFile(path)
    if f.metadata.num_rows:
        yield from f.iter_batches(batch_size=4096, columns=columns)


def texts(docs_path: Path, split: str) -> Iterator[str]:
    """The texts of one split's documents in `docs.parquet`, in order."""
    for batch in batches(docs_path, ["text", "split"]):
        for text, s in zip(batch["text"].to_pylist(), batch["split"].to_pylist(), strict=True):
            if s == split:
                yield text
