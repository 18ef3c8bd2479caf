"""Packing documents' tokens into fixed-length shards, and tracing a packed token back.

`mix_and_pack` is curate's mix-and-pack phase: the training split's documents chosen by the mix
(`mix.plan`), then each split packed by `pack_stream`. (The train/validation split is decided
before, in the split phase, by each document's content hash, not its position: adding other
documents never moves one, and identical texts always land together, so a copy can never leak
from train into validation.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cairn.errors import StageError
from cairn.stages.curate import mix

if TYPE_CHECKING:
    from cairn.stage import Context
    from cairn.stages.curate.config import CurateConfig
    from cairn.stages.curate.documents import Documents
    from cairn.stages.curate.sources import Source

TRAIN, VALIDATION = "train", "validation"
PACKING = "packing.npz"  # beside the shards: which document each packed token came from


def mix_and_pack(
    config: CurateConfig,
    srcs: list[Source],
    docs: Documents,
    scratch: Path,
    out: Path,
    ctx: Context,
) -> tuple[dict[str, Any], np.ndarray]:
    """The mix-and-pack phase: the train split mixed by the sources' weights, each split packed
    into shards under `out`; returns dataset.json's sizes and mix, and each document's uses."""
    split = np.array(docs.split)
    source = np.array(docs.source, dtype=np.int64)
    tokens = np.array(docs.tokens, dtype=np.int64)
    start = np.array(docs.start, dtype=np.int64)
    uses = np.zeros(len(docs.ids), dtype=np.int64)
    meta: dict[str, Any] = {"seq_len": config.seq_len}
    for stream, name in enumerate((TRAIN, VALIDATION)):
        numbers = np.flatnonzero(split == name)  # document numbers (lines of documents.jsonl)
        if name == TRAIN:
            plan = mix.plan(
                source[numbers],
                tokens[numbers],
                [s.name for s in srcs],
                [s.settings.weight for s in srcs],
                config.target_tokens,
                config.seed,
            )
            meta["mix"] = plan.record()
            entries = numbers[plan.entries]
            _log_mix(plan, ctx)
        else:
            entries = numbers
        np.add.at(uses, entries, 1)
        # pack_stream indexes starts/lengths by document number: the token file is per split.
        rows, tail = pack_stream(
            scratch / f"tokens-{name}.bin",
            start,
            tokens,
            entries,
            config.seq_len,
            config.seed,
            stream,
            out / name,
            config.shard_sequences,
        )
        if rows == 0:
            have = int(tokens[entries].sum())
            fix = "raise val_fraction, " if name == VALIDATION else ""
            raise StageError(
                f"the {name} split has {have} tokens, fewer than seq_len={config.seq_len} "
                f"needed for one sequence; {fix}lower seq_len, or add data"
            )
        meta[f"{name}_sequences"] = rows
        meta[f"{name}_tokens"] = rows * config.seq_len
        ctx.log(
            f"packed {rows} {name} sequences of {config.seq_len} tokens "
            f"({tail} tail tokens dropped)"
        )
    return meta, uses


def _log_mix(plan: mix.Plan, ctx: Context) -> None:
    parts = [
        f"{name}: {r['tokens_used']}/{r['tokens_available']} tokens ({r['epochs']}x)"
        for name, r in plan.sources.items()
    ]
    ctx.log("mix: " + "; ".join(parts))


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
