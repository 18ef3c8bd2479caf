"""The curate pipeline end to end, streamed through Ray Data with bounded memory:

    scan (Ray Data, one task per file: read → PII → normalise → length, language and quality
          filters → decontamination → MinHash signature)
    → dedup (Ray Data: exact and fuzzy, a shuffle by band key, connected components)
    → split (by content hash) → train tokenizer → tokenize (Ray Data)
    → mix (weights, up/down-sampling) → pack → write

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
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cairn.errors import StageError
from cairn.stage import Context, InputArtifact
from cairn.stages.curate import (
    card,
    card_files,
    decontam,
    dedup,
    filters,
    mix,
    pack,
    raydata,
    scan,
    sources,
)
from cairn.stages.curate import tokenizer as toks
from cairn.stages.curate.config import CurateConfig, SourceConfig

PHASES = 6  # scan, dedup, split, train tokenizer, tokenize, mix + pack
_KEPT_COLUMNS = ["order", "doc_id", "source", "origin", "text", "chars", "split_score"]


@dataclass
class Source:
    """One input and what happened to its documents."""

    name: str
    artifact: InputArtifact
    settings: SourceConfig
    files: int = 0
    stats: sources.SourceStats = field(default_factory=sources.SourceStats)


@dataclass
class Documents:
    """The kept documents, a few numbers each, in order (the rows of documents.jsonl)."""

    ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)  # first token in its split's token file
    tokens: list[int] = field(default_factory=list)


def curate(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Run every phase, write the dataset; returns dataset.json without its "config"."""
    out = ctx.output_path("dataset")
    scratch = ctx.scratch_dir / "curate"
    _clear(out, scratch)
    index = _eval_index(config, inputs, ctx)
    names = filters.filter_names(config, decontaminating=index is not None)
    srcs = _sources(config, inputs, names)
    raydata.configure(ctx.resources.num_workers * ctx.resources.cpus_per_worker or None)
    stats = card.CardStats()

    ctx.progress(0, PHASES, "reading and filtering sources")
    started = time.monotonic()
    tasks = _file_tasks(srcs, ctx)
    _scan(config, srcs, tasks, index, stats, scratch / "kept.parquet", out, ctx)
    ctx.log(f"scanned {len(tasks)} file(s) on Ray Data in {time.monotonic() - started:.1f}s")
    ctx.check_cancelled()

    ctx.progress(1, PHASES, "deduplicating")
    removed = dedup.run(config, scratch / "kept.parquet", ctx)
    ctx.check_cancelled()

    ctx.progress(2, PHASES, "splitting train/validation")
    counts = _split(
        config, srcs, removed, stats, scratch / "kept.parquet", scratch / "docs.parquet"
    )
    totals = {n: sum(s.stats.removed[n] for s in srcs) for n in names}
    n_in = sum(s.stats.documents_in for s in srcs)
    ctx.log(
        f"read {n_in} documents from {len(srcs)} source(s); kept {sum(counts.values())} "
        f"(removed: {', '.join(f'{k} {v}' for k, v in totals.items())})"
    )
    if not sum(counts.values()):
        raise StageError(filters.explain_empty(totals, config))
    if not counts[pack.TRAIN]:
        raise StageError(
            f"only {counts[pack.VALIDATION]} document(s) left after filtering: nothing to train "
            "on once validation is held out; add data or relax the filters"
        )
    ctx.log(
        f"split {counts[pack.TRAIN]} train / {counts[pack.VALIDATION]} validation documents "
        f"(val_fraction {config.val_fraction}, by content hash)"
    )
    ctx.check_cancelled()

    ctx.progress(3, PHASES, "training tokenizer")
    started = time.monotonic()
    # Trained on the train split only, so validation loss is measured on unseen text.
    tok = toks.train_stream(
        _texts(scratch / "docs.parquet", pack.TRAIN), counts[pack.TRAIN], config.vocab_size
    )
    toks.save(tok, out / "tokenizer")
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    ctx.log(
        f"trained byte-level BPE tokenizer: vocab {vocab_size} (asked {config.vocab_size}) "
        f"on {counts[pack.TRAIN]} documents in {time.monotonic() - started:.1f}s"
    )
    ctx.check_cancelled()

    ctx.progress(4, PHASES, "tokenizing")
    started = time.monotonic()
    docs = _tokenize(tok, srcs, stats, scratch, ctx)
    n_tokens = sum(docs.tokens)
    ctx.log(f"tokenized {n_tokens} tokens in {time.monotonic() - started:.1f}s")
    ctx.check_cancelled()

    ctx.progress(5, PHASES, "mixing, packing and writing shards")
    meta, uses = _mix_and_pack(config, srcs, docs, scratch, out, ctx)
    _write_documents(out / "documents.jsonl", docs, uses)
    meta.update(
        vocab_size=vocab_size,
        bos_token_id=toks.special_id(tok, toks.EOS),
        eos_token_id=toks.special_id(tok, toks.EOS),
        pad_token_id=toks.special_id(tok, toks.PAD),
        sources={s.name: _source_record(s) for s in srcs},
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
            "documents_in": n_in,
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


# --- inputs ----------------------------------------------------------------------------------


def _sources(
    config: CurateConfig, inputs: dict[str, Any], filter_names: tuple[str, ...]
) -> list[Source]:
    given = inputs.get("sources")
    artifacts = given if isinstance(given, list) else [given] if given else []
    if not artifacts:
        raise StageError("curate has no sources; list at least one under the step's inputs")
    names: list[str] = []
    for a in artifacts:
        names.append(_unique(a.name or a.path.name, names))
    settings = _match_settings(config, names)
    return [
        Source(
            name,
            a,
            settings.get(name, SourceConfig()),
            stats=sources.SourceStats(
                removed=dict.fromkeys(filter_names, 0),
                pii={} if config.pii else None,
            ),
        )
        for name, a in zip(names, artifacts, strict=True)
    ]


def _match_settings(config: CurateConfig, names: list[str]) -> dict[str, SourceConfig]:
    """config.sources keys → source names: a key is the input as written, or its file or folder
    name with or without extension ("./data/plays.jsonl", "plays.jsonl", "plays")."""

    def aliases(name: str) -> set[str]:
        p = Path(name.split("#", 1)[0].rstrip("/"))
        return {name, p.name, p.name.split(".", 1)[0]}

    matched: dict[str, SourceConfig] = {}
    for key, value in config.sources.items():
        hits = [n for n in names if key in aliases(n)]
        if len(hits) != 1:
            what = "matches no source" if not hits else f"matches several sources ({hits})"
            raise StageError(
                f"curate config: sources.{key} {what}; the sources are {names}: key each "
                "setting by the input as written in the workflow or by its file/folder name"
            )
        matched[hits[0]] = value
    return matched


def _eval_index(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> Any:
    given = inputs.get("eval_tasks")
    artifacts = given if isinstance(given, list) else [given] if given else []
    if not artifacts:
        return None
    index = decontam.EvalIndex.build(
        [(a.name or a.path.name, a.path) for a in artifacts], config.decontaminate
    )
    ctx.log(
        f"decontamination: {index.items} eval items from {len(index.files)} task data file(s), "
        f"{config.decontaminate.ngram}-grams, action {config.decontaminate.action}"
    )
    return index


def _file_tasks(srcs: list[Source], ctx: Context) -> list[scan.FileTask]:
    tasks: list[scan.FileTask] = []
    for i, s in enumerate(srcs):
        label = s.artifact.name or str(s.artifact.path)
        files, skipped = sources.source_files(s.artifact, label)
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
        tasks += [scan.FileTask(first + k, i, s.artifact.digest, f) for k, f in enumerate(files)]
    return tasks


# --- phase 1: scan ---------------------------------------------------------------------------


def _scan(
    config: CurateConfig,
    srcs: list[Source],
    tasks: list[scan.FileTask],
    index: Any,
    stats: card.CardStats,
    kept_path: Path,
    out: Path,
    ctx: Context,
) -> None:
    """Read and filter every file on Ray Data; kept documents go to `kept_path` (Parquet),
    documents matching an eval item to decontamination.jsonl."""
    import ray

    def scan_batch(batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for number in batch["task"]:
            yield from scan.scan_file(tasks[int(number)], config, index)

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
            kept = table.filter(pa.compute.equal(table["reason"], scan.KEPT))
            if kept.num_rows:
                extra = ["exact"] + (["bands"] if "bands" in kept.column_names else [])
                keep = kept.select(_KEPT_COLUMNS + extra)
                writer = writer or pq.ParquetWriter(kept_path, keep.schema)
                writer.write_table(keep)
            files_done = int(table["order"][-1].as_py()) >> 32
            if files_done > seen_files:
                seen_files = files_done
                ctx.progress(
                    files_done / len(tasks), PHASES, f"scanned {files_done}/{len(tasks)} files"
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


def _count(table: pa.Table, srcs: list[Source], stats: card.CardStats, flags: Any) -> None:
    """Count one scanned batch: documents in, removed by filter, skipped, PII, contamination."""
    reasons = table["reason"].to_pylist()
    if scan.FAILED in reasons:
        raise StageError(table["text"][reasons.index(scan.FAILED)].as_py())
    source = table["source"].to_numpy()
    read = np.array([r != scan.SKIPPED for r in reasons])
    raw_chars, raw_words = table["raw_chars"].to_numpy(), table["raw_words"].to_numpy()
    for i in np.unique(source):
        mine = (source == i) & read
        srcs[i].stats.documents_in += int(mine.sum())
        stats.add_input(srcs[i].name, raw_chars[mine], raw_words[mine])
    for j in np.flatnonzero(np.array([r != scan.KEPT for r in reasons])):
        row = table.slice(int(j), 1).to_pylist()[0]
        src, reason = srcs[row["source"]], row["reason"]
        if reason == scan.SKIPPED:  # malformed: counted by cause, with where it was, never silent
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


# --- phase 3: split --------------------------------------------------------------------------


def _split(
    config: CurateConfig,
    srcs: list[Source],
    removed: dict[int, str],
    stats: card.CardStats,
    kept_path: Path,
    docs_path: Path,
) -> dict[str, int]:
    """Drop duplicates, assign each survivor its split; survivors go to `docs_path`."""
    counts = {pack.TRAIN: 0, pack.VALIDATION: 0}
    lowest: tuple[float, int] | None = None  # (score, order) of the lowest-scoring document
    schema = pa.schema(
        [
            ("order", pa.int64()),
            ("doc_id", pa.string()),
            ("source", pa.int32()),
            ("origin", pa.string()),
            ("text", pa.large_string()),
            ("chars", pa.int64()),
            ("split", pa.string()),
        ]
    )
    with pq.ParquetWriter(docs_path, schema) as writer:
        for batch in _parquet_batches(kept_path, _KEPT_COLUMNS):
            keep = []
            for row in batch.to_pylist():
                reason = removed.get(row["order"])
                if reason is not None:
                    src = srcs[row["source"]]
                    src.stats.removed[reason] += 1
                    src.stats.documents_out -= 1
                    stats.add_removed(
                        src.name, reason, row["doc_id"], row["text"], chars=row["chars"]
                    )
                    continue
                split = pack.VALIDATION if row["split_score"] < config.val_fraction else pack.TRAIN
                counts[split] += 1
                if lowest is None or (row["split_score"], row["order"]) < lowest:
                    lowest = (row["split_score"], row["order"])
                keep.append({k: row[k] for k in schema.names if k != "split"} | {"split": split})
            if keep:
                writer.write_table(pa.Table.from_pylist(keep, schema))
    # A small corpus can put no document below val_fraction: the lowest-scoring one is then held
    # out, so validation is never silently empty. (Only it can change split when data changes.)
    if not counts[pack.VALIDATION] and counts[pack.TRAIN] > 1 and lowest is not None:
        table = pq.read_table(docs_path)  # tiny by construction: fewer than 1/val_fraction docs
        split = pa.compute.if_else(
            pa.compute.equal(table["order"], lowest[1]), pack.VALIDATION, table["split"]
        )
        pq.write_table(
            table.set_column(table.schema.get_field_index("split"), "split", split), docs_path
        )
        counts = {pack.TRAIN: counts[pack.TRAIN] - 1, pack.VALIDATION: 1}
    return counts


def _parquet_batches(path: Path, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    f = pq.ParquetFile(path)
    if f.metadata.num_rows:
        yield from f.iter_batches(batch_size=4096, columns=columns)


def _texts(docs_path: Path, split: str) -> Iterator[str]:
    for batch in _parquet_batches(docs_path, ["text", "split"]):
        for text, s in zip(batch["text"].to_pylist(), batch["split"].to_pylist(), strict=True):
            if s == split:
                yield text


# --- phase 4: tokenize -----------------------------------------------------------------------


def _tokenize(
    tok: Any, srcs: list[Source], stats: card.CardStats, scratch: Path, ctx: Context
) -> Documents:
    """Encode every kept document; tokens go to one int32 file per split.

    On this node, batch by batch, with the tokenizers library's own threads (one per core): it
    is as fast as raw `encode_batch` (bench/curation.py) and, unlike a Ray Data pass, costs no
    start-up. Across nodes the same `table_encoder` is a Ray Data `map_batches` function.
    """
    encode = toks.table_encoder(tok)
    docs = Documents()
    files = {s: open(scratch / f"tokens-{s}.bin", "wb") for s in (pack.TRAIN, pack.VALIDATION)}  # noqa: SIM115 (closed below)
    written = dict.fromkeys(files, 0)
    try:
        for batch in _parquet_batches(scratch / "docs.parquet"):
            ctx.check_cancelled()
            table = encode(pa.Table.from_batches([batch]))
            lists = table["tokens"].combine_chunks()
            flat = lists.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
            offsets = lists.offsets.to_numpy()
            lengths = np.diff(offsets)
            for i, row in enumerate(table.drop_columns(["tokens"]).to_pylist()):
                split = row["split"]
                files[split].write(flat[offsets[i] - offsets[0] : offsets[i + 1] - offsets[0]])
                docs.ids.append(row["doc_id"])
                docs.origins.append(row["origin"])
                docs.source.append(row["source"])
                docs.split.append(split)
                docs.chars.append(row["chars"])
                docs.start.append(written[split])
                docs.tokens.append(int(lengths[i]))
                written[split] += int(lengths[i])
            source, chars = table["source"].to_numpy(), table["chars"].to_numpy()
            for i in np.unique(source):
                mine = source == i
                srcs[i].stats.tokens += int(lengths[mine].sum())
                stats.add_output(srcs[i].name, chars[mine], lengths[mine])
    finally:
        for f in files.values():
            f.close()
    return docs


# --- phase 5: mix and pack -------------------------------------------------------------------


def _mix_and_pack(
    config: CurateConfig,
    srcs: list[Source],
    docs: Documents,
    scratch: Path,
    out: Path,
    ctx: Context,
) -> tuple[dict[str, Any], np.ndarray]:
    split = np.array(docs.split)
    source = np.array(docs.source, dtype=np.int64)
    tokens = np.array(docs.tokens, dtype=np.int64)
    start = np.array(docs.start, dtype=np.int64)
    uses = np.zeros(len(docs.ids), dtype=np.int64)
    meta: dict[str, Any] = {"seq_len": config.seq_len}
    for stream, name in enumerate((pack.TRAIN, pack.VALIDATION)):
        numbers = np.flatnonzero(split == name)  # document numbers (lines of documents.jsonl)
        if name == pack.TRAIN:
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
        rows, tail = pack.pack_stream(
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
            fix = "raise val_fraction, " if name == pack.VALIDATION else ""
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


# --- writing ---------------------------------------------------------------------------------


def _source_record(s: Source) -> dict[str, Any]:
    record = s.stats.as_dict()
    record.update(
        digest=s.artifact.digest,
        license=s.settings.license,
        weight=s.settings.weight,
        files=s.files,
    )
    return record


def _write_documents(path: Path, docs: Documents, uses: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, doc_id in enumerate(docs.ids):
            row = {
                "id": doc_id,
                "source": docs.origins[i],
                "split": docs.split[i],
                "chars": docs.chars[i],
                "tokens": docs.tokens[i],
                "uses": int(uses[i]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _clear(out: Path, scratch: Path) -> None:
    """Remove what an earlier attempt of this step left, so no stale file survives a retry."""
    for name in ("tokenizer", "card", pack.TRAIN, pack.VALIDATION):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in ("dataset.json", "documents.jsonl", "decontamination.jsonl", "DATA_CARD.md"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)


def _unique(name: str, taken: list[str]) -> str:
    """Two inputs with the same name get separate statistics: 'plays', 'plays#2'."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}#{n}"
    return candidate
