"""The data-order record: which documents were in each training batch, beside every checkpoint.

OLMo publishes the global batch indices of its runs and lost them for one release; here the record
is part of the sealed model artifact. While training, rank 0 keeps the train-split rows of every
global batch it stepped on and saves them, cumulatively, in each Ray Train checkpoint
(`data_order.npy`, [steps, global_batch]); a resumed run loads them back with the rest of the
state. At export the rows are resolved, through the dataset's `train/packing.npz` and
`documents.jsonl`, to the stable document ids curation assigned, and written as
`data_order.parquet` in every exported checkpoint directory and in the model directory:

| column | meaning |
| `step` | the optimizer step (1-based) whose batch held the sequence |
| `sequence` | the sequence's row in the train split |
| `document` | a document id from the dataset's documents.jsonl (null if the dataset has none) |
| `tokens` | how many of that document's tokens that sequence holds |

A checkpoint at step N records steps 1..N, so "was document X seen before step N?" is answered by
one file, even when older checkpoints were pruned.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

ARRAY = "data_order.npy"  # in a Ray Train checkpoint
FILE = "data_order.parquet"  # in an exported checkpoint / model directory
PACKING = "packing.npz"


def save(batches: list[np.ndarray], directory: Path) -> None:
    """Rank 0's record of steps 1..N into a Ray Train checkpoint directory."""
    width = len(batches[0]) if batches else 0
    arr = np.stack(batches) if batches else np.zeros((0, width), np.int64)
    np.save(directory / ARRAY, arr.astype(np.int64))


def load(directory: Path) -> list[np.ndarray]:
    """The record saved by `save`; empty if the checkpoint predates it."""
    path = Path(directory) / ARRAY
    if not path.is_file():
        return []
    return list(np.load(path))


def export(checkpoint_dir: Path, dataset_root: Path, seq_len: int, out: Path) -> int:
    """Write `out/data_order.parquet` from a Ray Train checkpoint's record; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches = np.load(Path(checkpoint_dir) / ARRAY)
    steps = np.repeat(np.arange(1, len(batches) + 1, dtype=np.int32), batches.shape[1])
    sequences = batches.reshape(-1)
    resolved = _resolve(Path(dataset_root), sequences, seq_len)
    if resolved is None:  # a dataset without packing info: rows only
        table = pa.table(
            {
                "step": steps,
                "sequence": sequences,
                "document": pa.nulls(len(steps), pa.string()),
                "tokens": np.full(len(steps), seq_len, np.int32),
            }
        )
    else:
        which, ids, tokens = resolved
        table = pa.table(
            {
                "step": steps[which],
                "sequence": sequences[which],
                "document": pa.DictionaryArray.from_arrays(pa.array(ids[0]), pa.array(ids[1])),
                "tokens": tokens,
            }
        )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / FILE, compression="zstd")
    return table.num_rows


def _resolve(
    root: Path, sequences: np.ndarray, seq_len: int
) -> tuple[np.ndarray, tuple[np.ndarray, list[str]], np.ndarray] | None:
    """For each (sequence, document) pair: the index into `sequences`, the document id (as
    dictionary indices + values) and its token count in that sequence."""
    packed = _packing(str(root))
    if packed is None:
        return None
    offsets, doc_numbers, ids = packed
    start = sequences.astype(np.int64) * seq_len
    end = start + seq_len
    first = np.searchsorted(offsets, start, side="right") - 1
    last = np.searchsorted(offsets, end - 1, side="right") - 1
    counts = last - first + 1
    which = np.repeat(np.arange(len(sequences)), counts)
    within = np.arange(len(which)) - np.repeat(np.cumsum(counts) - counts, counts)
    entry = first[which] + within  # position in the packed stream's document order
    entry_end = np.append(offsets[1:], np.iinfo(np.int64).max)[entry]
    tokens = np.minimum(entry_end, end[which]) - np.maximum(offsets[entry], start[which])
    numbers = doc_numbers[entry]
    used, index = np.unique(numbers, return_inverse=True)
    return which, (index.astype(np.int32), [ids[n] for n in used]), tokens.astype(np.int32)


@functools.lru_cache(maxsize=2)
def _packing(root: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """The train split's packing (token offset and document of each packed entry) and the
    documents' ids, read once per dataset: export resolves every kept checkpoint against it."""
    packing, documents = Path(root) / "train" / PACKING, Path(root) / "documents.jsonl"
    if not packing.is_file() or not documents.is_file():
        return None
    with np.load(packing) as p:
        offsets, doc_numbers = p["offsets"], p["documents"]
    ids = [json.loads(line)["id"] for line in documents.read_text().splitlines() if line]
    return offsets, doc_numbers, ids


def lookup(path: Path, doc: str, before: int | None = None) -> dict[str, Any]:
    """Where document `doc` appears in the record at `path` (a directory holding the file).

    `before`: only steps ≤ before (it must not exceed the steps the record covers).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(Path(path) / FILE)
    covered = int(pc.max(table["step"]).as_py() or 0)
    if before is not None:
        if before > covered:
            raise ValueError(
                f"{path} records steps 1..{covered} only; to ask about step {before}, use a "
                "checkpoint at or after it (or the final model directory)"
            )
        table = table.filter(pc.less_equal(table["step"], before))
    hits = table.filter(pc.equal(table["document"].cast("string"), doc))
    steps = sorted(set(hits["step"].to_pylist()))
    return {
        "document": doc,
        "checkpoint": str(path),
        "steps_recorded": covered,
        "before": before if before is not None else covered,
        "seen": bool(steps),
        "first_step": steps[0] if steps else None,
        "steps": steps,
        "times": hits.num_rows,
        "tokens": int(pc.sum(hits["tokens"]).as_py() or 0),
        "sequences": sorted(set(hits["sequence"].to_pylist())),
    }


def summary(path: Path) -> dict[str, Any]:
    """What the record at `path` covers: steps, sequences, distinct documents."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(Path(path) / FILE)
    return {
        "checkpoint": str(path),
        "steps_recorded": int(pc.max(table["step"]).as_py() or 0),
        "sequences": len(pc.unique(table["sequence"])),
        "documents": len(pc.unique(table["document"].cast("string")).drop_null()),
        "tokens": int(pc.sum(table["tokens"]).as_py() or 0),
    }
