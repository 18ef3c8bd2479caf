"""The curate pipeline end to end: read → normalise → filter → dedup → split → train tokenizer →
tokenize → pack → write.

This module only sequences the phases and reports on them; each phase's logic lives in its own
module (`sources`, `clean`, `tokenizer`, `pack`). The output layout written here is a contract
with the pretrain stage:

    tokenizer/                 transformers fast tokenizer (AutoTokenizer.from_pretrained)
    train/shard-00000.npy …    int32 [n_sequences, seq_len], at most shard_sequences rows each
    validation/shard-00000.npy
    dataset.json               sizes, special token ids, per-source and per-filter counts, config
    documents.jsonl            one line per kept document: id, source, split, chars, tokens

Token counts per document and per source include each document's EOS and are taken before
packing; `train_tokens`/`validation_tokens` count what the shards hold (the tail shorter than
one sequence is dropped).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.errors import StageError
from cairn.stages.base import Context, InputArtifact
from cairn.stages.curate import clean, pack, pii, sources, tokenizer
from cairn.stages.curate.config import CurateConfig

PHASES = 5  # read+filter, split, train tokenizer, tokenize, write


@dataclass
class Kept:
    """A document that survived the filters."""

    id: str
    source: str
    origin: str
    text: str
    digest: bytes
    split: str = ""
    tokens: int = 0


def curate(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Run every phase, write the dataset; returns dataset.json without its "config"."""
    artifacts = _artifacts(inputs)
    out = ctx.output_path("dataset")
    _clear(out)

    ctx.progress(0, PHASES, "reading and filtering sources")
    stats, kept = _read_and_filter(config, artifacts, ctx)
    total = {
        name: sum(s.removed[name] for s in stats.values()) for name in clean.filter_names(config)
    }
    n_in = sum(s.documents_in for s in stats.values())
    ctx.log(
        f"read {n_in} documents from {len(stats)} source(s); kept {len(kept)} "
        f"(removed: {', '.join(f'{k} {v}' for k, v in total.items())})"
    )
    if not kept:
        raise StageError(clean.explain_empty(total, config))
    ctx.check_cancelled()

    ctx.progress(1, PHASES, "splitting train/validation")
    for doc, split in zip(
        kept, pack.assign_splits([d.digest for d in kept], config.val_fraction), strict=True
    ):
        doc.split = split
    train_docs = [d for d in kept if d.split == pack.TRAIN]
    if not train_docs:
        raise StageError(
            f"only {len(kept)} document(s) left after filtering: nothing to train on once "
            "validation is held out; add data or relax the filters"
        )
    ctx.log(
        f"split {len(train_docs)} train / {len(kept) - len(train_docs)} validation documents "
        f"(val_fraction {config.val_fraction}, by content hash)"
    )
    ctx.check_cancelled()

    ctx.progress(2, PHASES, "training tokenizer")
    started = time.monotonic()
    # Trained on the train split only, so validation loss is measured on unseen text.
    tok = tokenizer.train([d.text for d in train_docs], config.vocab_size)
    tokenizer.save(tok, out / "tokenizer")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    ctx.log(
        f"trained byte-level BPE tokenizer: vocab {vocab_size} (asked {config.vocab_size}) "
        f"on {len(train_docs)} documents in {time.monotonic() - started:.1f}s"
    )
    ctx.check_cancelled()

    ctx.progress(3, PHASES, "tokenizing")
    started = time.monotonic()
    by_split: dict[str, list] = {pack.TRAIN: [], pack.VALIDATION: []}
    texts = [d.text for d in kept]
    for doc, ids in zip(kept, tokenizer.encode(tok, texts, ctx.check_cancelled), strict=True):
        doc.tokens = len(ids)
        stats[doc.source].tokens += len(ids)
        by_split[doc.split].append(ids)
    n_tokens = sum(d.tokens for d in kept)
    ctx.log(f"tokenized {n_tokens} tokens in {time.monotonic() - started:.1f}s")
    ctx.check_cancelled()

    ctx.progress(4, PHASES, "packing and writing shards")
    rows = {}
    for stream, split in enumerate((pack.TRAIN, pack.VALIDATION)):
        rows[split] = pack.pack(by_split[split], config.seq_len, config.seed, stream)
        if len(rows[split]) == 0:
            have = sum(len(ids) for ids in by_split[split])
            fix = "raise val_fraction, " if split == pack.VALIDATION else ""
            raise StageError(
                f"the {split} split has {have} tokens, fewer than seq_len={config.seq_len} "
                f"needed for one sequence; {fix}lower seq_len, or add data"
            )
        pack.write_shards(rows[split], out / split, config.shard_sequences)
    _write_documents(out / "documents.jsonl", kept)

    train_rows, val_rows = rows[pack.TRAIN], rows[pack.VALIDATION]
    meta: dict[str, Any] = {
        "seq_len": config.seq_len,
        "vocab_size": vocab_size,
        "bos_token_id": tokenizer.special_id(tok, tokenizer.EOS),
        "eos_token_id": tokenizer.special_id(tok, tokenizer.EOS),
        "pad_token_id": tokenizer.special_id(tok, tokenizer.PAD),
        "train_sequences": len(train_rows),
        "validation_sequences": len(val_rows),
        "train_tokens": train_rows.size,
        "validation_tokens": val_rows.size,
        "sources": {name: s.as_dict() for name, s in stats.items()},
        "filters": total,
    }
    (out / "dataset.json").write_text(
        json.dumps({**meta, "config": config.identity()}, indent=2) + "\n", encoding="utf-8"
    )
    ctx.log(
        f"wrote {len(train_rows)} train and {len(val_rows)} validation sequences of "
        f"{config.seq_len} tokens ({n_tokens - train_rows.size - val_rows.size} tail tokens "
        "dropped)"
    )
    ctx.log_metrics(
        {
            "documents_in": n_in,
            "documents_out": len(kept),
            **{f"removed_{name}": n for name, n in total.items()},
            "vocab_size": vocab_size,
            "train_sequences": len(train_rows),
            "validation_sequences": len(val_rows),
            "train_tokens": train_rows.size,
            "validation_tokens": val_rows.size,
        }
    )
    ctx.progress(PHASES, PHASES, "done")
    return meta


def _artifacts(inputs: dict[str, Any]) -> list[InputArtifact]:
    given = inputs.get("sources")
    artifacts = given if isinstance(given, list) else [given] if given else []
    if not artifacts:
        raise StageError("curate has no sources; list at least one under the step's inputs")
    return artifacts


def _clear(out: Path) -> None:
    """Remove what an earlier attempt of this step left, so no stale shard survives a retry."""
    for name in ("tokenizer", pack.TRAIN, pack.VALIDATION):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("dataset.json", "documents.jsonl"):
        (out / name).unlink(missing_ok=True)


def _read_and_filter(
    config: CurateConfig, artifacts: list[InputArtifact], ctx: Context
) -> tuple[dict[str, clean.SourceStats], list[Kept]]:
    """Stream every source through normalise, the length filters and dedup.

    Streaming keeps only the surviving normalised texts in memory, not the raw files.
    """
    stats: dict[str, clean.SourceStats] = {}
    kept: list[Kept] = []
    seen: set[bytes] = set()
    for artifact in artifacts:
        name = _unique(artifact.name or artifact.path.name, stats)
        label = artifact.name or str(artifact.path)
        st = stats[name] = clean.SourceStats(
            removed=dict.fromkeys(clean.filter_names(config), 0),
            pii={} if config.pii else None,
        )
        files, skipped = sources.source_files(artifact, label)
        if skipped:
            ctx.log(
                f"{label}: skipped {len(skipped)} unsupported file(s): {', '.join(skipped[:5])}"
            )
        position = 0
        for file in files:
            ctx.check_cancelled()
            for raw in sources.read_file(
                file, config.text_field, config.split_text_files, ctx.check_cancelled
            ):
                doc_id = _doc_id(artifact.digest, position)
                position += 1
                if st.pii is not None:
                    raw, found = pii.scrub(raw)
                    for kind, n in found.items():
                        st.pii[kind] = st.pii.get(kind, 0) + n
                text = clean.normalise(raw)
                reason = clean.length_filter(text, config) or clean.quality_filter(raw, config)
                if reason is None:
                    key = clean.digest(text)
                    if config.dedup and key in seen:
                        reason = "dedup"
                    seen.add(key)
                if reason is not None:
                    st.removed[reason] += 1
                    continue
                kept.append(Kept(doc_id, name, file.origin, text, key))
        st.documents_in = position
        st.documents_out = position - sum(st.removed.values())
        if position == 0:
            raise StageError(
                f"{label}: no documents in this source ({len(files)} readable file(s)"
                + (f", {len(skipped)} skipped as unsupported" if skipped else "")
                + f"); curate reads {sources.SUPPORTED}: check the path and the files"
            )
    return stats, kept


def _doc_id(source_digest: str, position: int) -> str:
    """Stable for as long as the source is unchanged (any change gives it a new digest)."""
    return hashlib.sha256(f"{source_digest}:{position}".encode()).hexdigest()[:16]


def _unique(name: str, taken: dict[str, Any]) -> str:
    """Two inputs with the same name get separate statistics: 'plays', 'plays#2'."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    return candidate


def _write_documents(path: Path, kept: list[Kept]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in kept:
            row = {"id": d.id, "source": d.origin, "split": d.split, "chars": len(d.text)}
            f.write(json.dumps({**row, "tokens": d.tokens}, ensure_ascii=False) + "\n")
