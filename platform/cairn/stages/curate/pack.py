"""Packing documents' tokens into fixed-length shards, and tracing a packed token back.

(The train/validation split is decided before, in scan and pipeline, by each document's content
hash, not its position: adding other documents never moves one, and identical texts always land
together, so a copy can never leak from train into validation.)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TRAIN, VALIDATION = "train", "validation"
PACKING = "packing.npz"  # beside the shards: which document each packed token came from


def pack_stream(
    tokens: Path,
    starts: np.ndarray,
    lengths: np.ndarray,
    entries: np.ndarray,
    seq_len: int,
    seed: int,
    stream: int,
    directory: Path,
    shard_sequences: int,
) -> tuple[int, int]:
    """Shuffle `entries` (document numbers, repeats allowed), concatenate their tokens, cut rows.

    Document i's tokens (EOS included) are `lengths[i]` int32 values at element `starts[i]` of the
    file `tokens`. They are read one document at a time and written shard by shard, so memory
    holds one shard, never the split. Shuffled with the seed so each shard mixes sources; the
    tail shorter than seq_len is dropped rather than padded, so every token the model sees is
    real text. Writes shard-00000.npy, … and `packing.npz` (see `trace`). Returns (rows, tail
    tokens dropped).
    """
    directory.mkdir(parents=True, exist_ok=True)
    order = entries[np.random.default_rng([seed, stream]).permutation(len(entries))]
    offsets = np.zeros(len(order), dtype=np.int64)
    if len(order):
        offsets[1:] = np.cumsum(lengths[order][:-1], dtype=np.int64)
    np.savez(directory / PACKING, documents=order.astype(np.int64), offsets=offsets)
    shard_tokens = shard_sequences * seq_len
    pending: list[np.ndarray] = []
    have = rows = shard = 0
    with open(tokens, "rb") as f:
        fd = f.fileno()
        for doc in order:
            n = int(lengths[doc])
            data = os.pread(fd, 4 * n, 4 * int(starts[doc]))
            pending.append(np.frombuffer(data, dtype=np.int32))
            have += n
            if have >= shard_tokens:
                flat = np.concatenate(pending)
                _save(directory, shard, flat[:shard_tokens].reshape(shard_sequences, seq_len))
                shard, rows = shard + 1, rows + shard_sequences
                pending, have = [flat[shard_tokens:]], have - shard_tokens
    flat = np.concatenate(pending) if pending else np.zeros(0, np.int32)
    n = len(flat) // seq_len
    if n:
        _save(directory, shard, flat[: n * seq_len].reshape(n, seq_len))
        rows += n
    return rows, len(flat) - n * seq_len


def _save(directory: Path, shard: int, rows: np.ndarray) -> None:
    np.save(directory / f"shard-{shard:05d}.npy", np.ascontiguousarray(rows, np.int32))


def trace(directory: Path, row: int, column: int, seq_len: int) -> int:
    """The document (its line number in documents.jsonl) that token [row, column] of a split
    came from; rows are numbered across shards (shard k holds rows k*shard_sequences, …)."""
    with np.load(directory / PACKING) as packing:
        offsets, documents = packing["offsets"], packing["documents"]
    position = row * seq_len + column
    return int(documents[np.searchsorted(offsets, position, side="right") - 1])
