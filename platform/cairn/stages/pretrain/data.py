"""The curated dataset as pretraining reads it: validation of its layout and a deterministic order.

The curate stage writes fixed-length token sequences as numpy shards. This module checks that
layout before any worker starts (so a bad dataset is a `StageError` that names the file, not a
crash inside Ray Train) and defines which sequences make up each optimizer step. The order is a
pure function of (seed, step): epoch `e` is a permutation from `numpy.random.default_rng(seed + e)`
and step `s` takes a contiguous slice of it, so a run that was interrupted and resumed sees exactly
the batches an uninterrupted run sees.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cairn.errors import StageError

if TYPE_CHECKING:
    from cairn.stage import Resources
    from cairn.stages.pretrain.config import PretrainConfig

REQUIRED_KEYS = ("seq_len", "vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


@dataclass(frozen=True)
class DatasetInfo:
    """What pretraining needs to know about a curated dataset directory."""

    root: Path
    seq_len: int
    vocab_size: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    train_shards: tuple[Path, ...]
    validation_shards: tuple[Path, ...]
    train_sequences: int
    validation_sequences: int

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"


def inspect_dataset(root: Path) -> DatasetInfo:
    """Read `dataset.json` and the shard headers under `root`; raise `StageError` on any mismatch.

    Only shard headers are read (memory-mapped), plus the token range of the first train shard,
    so this stays cheap for large datasets.
    """
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise StageError(
            f"pretrain: input 'dataset' has no dataset.json at {meta_path}; "
            "fix: feed pretrain the 'dataset' output of a curate step"
        )
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise StageError(
            f"pretrain: {meta_path} is not valid JSON ({e}); fix: re-run curate"
        ) from e
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise StageError(
            f"pretrain: {meta_path} lacks {', '.join(missing)}; "
            "fix: re-run curate with a version that writes them"
        )
    if not (root / "tokenizer").is_dir():
        raise StageError(
            f"pretrain: input 'dataset' has no tokenizer/ directory at {root / 'tokenizer'}; "
            "fix: re-run curate (it saves the tokenizer next to the shards)"
        )
    seq_len = int(meta["seq_len"])
    vocab_size = int(meta["vocab_size"])
    if seq_len < 2 or vocab_size < 2:
        raise StageError(f"pretrain: {meta_path}: seq_len and vocab_size must be at least 2")

    train_shards, n_train = _check_split(root, "train", seq_len, meta.get("train_sequences"))
    val_shards, n_val = _check_split(root, "validation", seq_len, meta.get("validation_sequences"))
    if n_train == 0:
        raise StageError(f"pretrain: {root / 'train'} holds no sequences; fix: curate more text")

    first = np.load(train_shards[0], mmap_mode="r")
    if first.size and (int(first.min()) < 0 or int(first.max()) >= vocab_size):
        raise StageError(
            f"pretrain: {train_shards[0]} holds token ids outside [0, {vocab_size}) "
            f"(min {int(first.min())}, max {int(first.max())}); fix: dataset.json's vocab_size "
            "must match the tokenizer that encoded the shards — re-run curate"
        )

    def _opt(key: str) -> int | None:
        return None if meta[key] is None else int(meta[key])

    return DatasetInfo(
        root=root,
        seq_len=seq_len,
        vocab_size=vocab_size,
        bos_token_id=_opt("bos_token_id"),
        eos_token_id=_opt("eos_token_id"),
        pad_token_id=_opt("pad_token_id"),
        train_shards=train_shards,
        validation_shards=val_shards,
        train_sequences=n_train,
        validation_sequences=n_val,
    )


def check_batch(config: PretrainConfig, data: DatasetInfo, res: Resources) -> None:
    """Checks that need the resources or the dataset, so they cannot live on the config model."""
    sizes = range(res.min_workers or res.num_workers, res.num_workers + 1)
    bad = [w for w in sizes if config.global_batch_size % w]
    if bad and not res.elastic:
        n = res.num_workers
        lower = config.global_batch_size // n * n
        raise StageError(
            f"pretrain: config.global_batch_size ({config.global_batch_size}) must be divisible "
            f"by resources.num_workers ({n}); fix: set global_batch_size to "
            f"{max(lower, n)} or {lower + n}, or change num_workers"
        )
    if bad:
        step = math.lcm(*sizes)
        good = -(-config.global_batch_size // step) * step
        raise StageError(
            f"pretrain: elastic num_workers {res.workers_text()}: config.global_batch_size "
            f"({config.global_batch_size}) must be divisible by every worker count the group may "
            f"have, and {', '.join(map(str, bad))} do(es) not divide it (each worker takes an "
            f"equal share of every step's batch, so the batch and the LR schedule stay the same "
            f"as the group grows); fix: set global_batch_size to a multiple of {step} "
            f"(e.g. {good}), or narrow the range"
        )
    if config.global_batch_size > data.train_sequences:
        raise StageError(
            f"pretrain: config.global_batch_size ({config.global_batch_size}) exceeds the "
            f"{data.train_sequences} train sequences of {data.root}; fix: lower "
            "global_batch_size or curate more data"
        )


def _check_split(
    root: Path, split: str, seq_len: int, declared: Any
) -> tuple[tuple[Path, ...], int]:
    shards = tuple(sorted((root / split).glob("shard-*.npy")))
    if split == "train" and not shards:
        raise StageError(f"pretrain: no {split}/shard-*.npy files under {root}; fix: re-run curate")
    total = 0
    for path in shards:
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise StageError(f"pretrain: cannot read {path} ({e}); fix: re-run curate") from e
        if arr.ndim != 2 or arr.shape[1] != seq_len or not np.issubdtype(arr.dtype, np.integer):
            raise StageError(
                f"pretrain: {path} has shape {arr.shape} and dtype {arr.dtype}; expected an "
                f"integer array [n_sequences, {seq_len}] (seq_len from dataset.json); "
                "fix: re-run curate"
            )
        total += int(arr.shape[0])
    if declared is not None and int(declared) != total:
        raise StageError(
            f"pretrain: dataset.json says {split}_sequences={declared} but the {split} shards "
            f"hold {total}; fix: re-run curate (the dataset directory was modified)"
        )
    return shards, total


class Sequences:
    """Random access to the rows of a split's shards, memory-mapped so workers share page cache."""

    def __init__(self, shards: tuple[Path, ...]) -> None:
        self._arrays = [np.load(p, mmap_mode="r") for p in shards]
        sizes = [a.shape[0] for a in self._arrays]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows `indices` (global row numbers, any order) as an int64 array [len, seq_len]."""
        indices = np.asarray(indices, dtype=np.int64)
        shard_of = np.searchsorted(self._offsets, indices, side="right") - 1
        seq_len = self._arrays[0].shape[1] if self._arrays else 0
        out = np.empty((len(indices), seq_len), dtype=np.int64)
        for s in np.unique(shard_of):
            mask = shard_of == s
            out[mask] = self._arrays[s][indices[mask] - self._offsets[s]]
        return out


class BatchOrder:
    """Which train sequences form the global batch of each step (see the module docstring).

    Each epoch uses `n // global_batch` full batches; the remainder of the permutation is skipped
    so that a step never straddles two epochs.
    """

    def __init__(self, n_sequences: int, global_batch: int, seed: int) -> None:
        if n_sequences < global_batch:
            raise ValueError("fewer sequences than one global batch")
        self.global_batch = global_batch
        self.steps_per_epoch = n_sequences // global_batch
        self._n = n_sequences
        self._seed = seed
        self._epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def global_batch_at(self, step: int) -> np.ndarray:
        """The global batch of 0-based optimizer step `step`."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng(self._seed + epoch).permutation(self._n)
            self._epoch = epoch
        return self._perm[i * self.global_batch : (i + 1) * self.global_batch]

    def rank_batch_at(self, step: int, rank: int, world_size: int) -> np.ndarray:
        """Rank `rank`'s contiguous `global_batch // world_size` share of step `step`'s batch."""
        per_rank = self.global_batch // world_size
        return self.global_batch_at(step)[rank * per_rank : (rank + 1) * per_rank]
