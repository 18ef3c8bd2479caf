"""The curate pipeline end to end, streamed through Ray Data with bounded memory. `curate` only
sequences the phases; each is a function in the module named after it:

    scan.run                Ray Data, one task per file: read → PII → normalise → length,
                            language and quality filters → decontamination → MinHash keys
    dedup.run               Ray Data: exact and fuzzy, a shuffle by key, connected components
    split.run               train or validation, by content hash
    tokenizer.train_split   a byte-level BPE trained on the train split
    tokenize.run            every kept document encoded once
    pack.mix_and_pack       the mix by weight (mix.py), then each split packed into shards
    documents.write         documents.jsonl
    card_files.write_card   the data card

No phase holds the corpus in memory: text flows from one phase to the next through Parquet and
token files in the step's scratch directory, read and written batch by batch. What the driver
keeps per document is a few numbers (id, source, split, token count: ~40 bytes), so memory grows
with the number of documents at that rate and not with their text (bench/curation.py measures it).

The output layout is a contract with the pretrain stage and the release:

    tokenizer/                 transformers fast tokenizer (AutoTokenizer.from_pretrained)
    train/shard-00000.npy …    int32 [n_sequences, seq_len], at most shard_sequences rows each
    train/packing.npz          which document each packed token came from (`pack.trace`)
    validation/…               the same for validation
    dataset.json               sizes, special token ids, per-source and per-filter counts, the
                               mix, the decontamination summary, the data card's statistics
    documents.jsonl            one line per kept document: id, source file, split, chars,
                               tokens, uses (times it is packed into the split)
    decontamination.jsonl      (with eval_tasks) every document that matched an eval item
    DATA_CARD.md, card/        the data card: tables, histograms, removed examples

Token counts per document and per source include each document's EOS and are taken before
packing; `train_tokens`/`validation_tokens` count what the shards hold (the tail shorter than
one sequence is dropped).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cairn.stage import Context
from cairn.stages.curate import (
    card_files,
    decontam,
    dedup,
    documents,
    filters,
    pack,
    raydata,
    scan,
    sources,
    split,
    tokenize,
    tokenizer,
)
from cairn.stages.curate.card import CardStats
from cairn.stages.curate.config import CurateConfig
from cairn.stages.curate.pack import TRAIN, VALIDATION

PHASES = 6  # scan, dedup, split, train tokenizer, tokenize, mix + pack


def curate(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Run every phase, write the dataset; returns dataset.json without its "config"."""
    out = ctx.output_path("dataset")
    scratch = ctx.scratch_dir / "curate"
    kept, survivors = scratch / "kept.parquet", scratch / "docs.parquet"
    _clear(out, scratch)
    index = decontam.index_inputs(inputs, config.decontaminate, ctx)
    names = filters.filter_names(config, decontaminating=index is not None)
    srcs = sources.from_inputs(config, inputs, names)
    raydata.configure(ctx.resources.num_workers * ctx.resources.cpus_per_worker or None)
    stats = CardStats()

    ctx.progress(0, PHASES, "reading and filtering sources")
    scan.run(config, srcs, index, stats, kept, out, ctx, PHASES)
    ctx.check_cancelled()

    ctx.progress(1, PHASES, "deduplicating")
    removed = dedup.run(config, kept, ctx)
    ctx.check_cancelled()

    ctx.progress(2, PHASES, "splitting train/validation")
    counts = split.run(config, srcs, removed, stats, kept, survivors)
    totals = sources.removed(srcs, names)
    split.check(config, srcs, counts, totals, ctx)
    ctx.check_cancelled()

    ctx.progress(3, PHASES, "training tokenizer")
    tok = tokenizer.train_split(survivors, counts[TRAIN], config.vocab_size, out, ctx)
    ctx.check_cancelled()

    ctx.progress(4, PHASES, "tokenizing")
    docs = tokenize.run(tok, srcs, stats, scratch, ctx)
    ctx.check_cancelled()

    ctx.progress(5, PHASES, "mixing, packing and writing shards")
    meta, uses = pack.mix_and_pack(config, srcs, docs, scratch, out, ctx)
    documents.write(out / "documents.jsonl", docs, uses)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    meta.update(
        vocab_size=vocab_size,
        bos_token_id=tokenizer.special_id(tok, tokenizer.EOS),
        eos_token_id=tokenizer.special_id(tok, tokenizer.EOS),
        pad_token_id=tokenizer.special_id(tok, tokenizer.PAD),
        sources={s.name: s.record() for s in srcs},
        filters=totals,
    )
    if index is not None:
        with open(out / "decontamination.jsonl", encoding="utf-8") as f:
            found = (json.loads(line) for line in f)
            meta["decontamination"] = decontam.report(index, config.decontaminate, found)
    meta["card"] = stats.to_dict()
    full = {**meta, "config": config.identity()}
    (out / "dataset.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    card_files.write_card(out, full)
    shutil.rmtree(scratch, ignore_errors=True)
    ctx.log_metrics(
        {
            "documents_in": sum(s.stats.documents_in for s in srcs),
            "documents_out": sum(counts.values()),
            **{f"removed_{name}": n for name, n in totals.items()},
            "vocab_size": vocab_size,
            "train_sequences": meta["train_sequences"],
            "validation_sequences": meta["validation_sequences"],
            "train_tokens": meta["train_tokens"],
            "validation_tokens": meta["validation_tokens"],
        }
    )
    ctx.progress(PHASES, PHASES, "done")
    return meta


def _clear(out: Path, scratch: Path) -> None:
    """Remove what an earlier attempt of this step left, so no stale file survives a retry."""
    for name in ("tokenizer", "card", TRAIN, VALIDATION):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("dataset.json", "documents.jsonl", "decontamination.jsonl", "DATA_CARD.md"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
