"""Splitting documents into train/validation and packing their tokens into fixed-length shards.

The split is decided by each document's content hash, not its position, so adding or removing
other documents never moves a document from one split to the other, and identical texts (when
dedup is off) always land together: a copy can never leak from train into validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRAIN, VALIDATION = "train", "validation"


def split_score(digest: bytes) -> float:
    """A document's place in [0, 1), uniform over documents: below val_fraction is validation."""
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(digests: list[bytes], val_fraction: float) -> list[str]:
    """The split of each document.

    A small corpus can put no document at all below val_fraction; then the single lowest-scoring
    document is held out, so that validation is never silently empty. (Only this fallback
    document can change split when other documents are added.)
    """
    scores = [split_score(d) for d in digests]
    splits = [VALIDATION if s < val_fraction else TRAIN for s in scores]
    if VALIDATION not in splits and len(splits) > 1:
        splits[min(range(len(scores)), key=scores.__getitem__)] = VALIDATION
    return splits


def pack(docs: list[np.ndarray], seq_len: int, seed: int, stream: int) -> np.ndarray:
    """Documents (EOS-terminated token arrays) shuffled, concatenated and cut into rows.

    Shuffled with the seed so that each shard mixes sources instead of holding one play after
    another. The tail shorter than seq_len is dropped rather than padded, so that every token
    the model sees is real text.
    """
    if not docs:
        return np.zeros((0, seq_len), dtype=np.int32)
    order = np.random.default_rng([seed, stream]).permutation(len(docs))
    tokens = np.concatenate([docs[i] for i in order])
    n = len(tokens) // seq_len
    return tokens[: n * seq_len].reshape(n, seq_len)


def write_shards(rows: np.ndarray, directory: Path, shard_sequences: int) -> int:
    """Write rows as shard-00000.npy, shard-00001.npy, …; returns the number of shards."""
    directory.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, start in enumerate(range(0, len(rows), shard_sequences), 1):
        shard = np.ascontiguousarray(rows[start : start + shard_sequences], dtype=np.int32)
        np.save(directory / f"shard-{count - 1:05d}.npy", shard, allow_pickle=False)
    return count
