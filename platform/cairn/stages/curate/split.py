"""The split phase: duplicates dropped, every survivor put in train or validation by its content.

A document's split comes from the sha256 of its normalised text (`split_score`, bytes 0-8 of the
digest the scan computed), not from its position: adding other documents never moves one, and
identical texts always land together, so a copy can never leak from train into validation. The
survivors go to the scratch file the tokenizer and tokenize phases read, with their split.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cairn.errors import StageError
from cairn.stage import Context
from cairn.stages.curate import filters, scratch, sources
from cairn.stages.curate.card import CardStats
from cairn.stages.curate.config import CurateConfig
from cairn.stages.curate.pack import TRAIN, VALIDATION


def run(
    config: CurateConfig,
    srcs: list[sources.Source],
    removed: dict[int, str],
    stats: CardStats,
    kept_path: Path,
    docs_path: Path,
) -> dict[str, int]:
    """Drop duplicates, assign each survivor its split; survivors go to `docs_path`."""
    counts = {TRAIN: 0, VALIDATION: 0}
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
        for batch in scratch.batches(kept_path, scratch.KEPT_COLUMNS):
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
                split = VALIDATION if row["split_score"] < config.val_fraction else TRAIN
                counts[split] += 1
                if lowest is None or (row["split_score"], row["order"]) < lowest:
                    lowest = (row["split_score"], row["order"])
                keep.append({k: row[k] for k in schema.names if k != "split"} | {"split": split})
            if keep:
                writer.write_table(pa.Table.from_pylist(keep, schema))
    # A small corpus can put no document below val_fraction: the lowest-scoring one is then held
    # out, so validation is never silently empty. (Only it can change split when data changes.)
    if not counts[VALIDATION] and counts[TRAIN] > 1 and lowest is not None:
        table = pq.read_table(docs_path)  # tiny by construction: fewer than 1/val_fraction docs
        split = pa.compute.if_else(
            pa.compute.equal(table["order"], lowest[1]), VALIDATION, table["split"]
        )
        pq.write_table(
            table.set_column(table.schema.get_field_index("split"), "split", split), docs_path
        )
        counts = {TRAIN: counts[TRAIN] - 1, VALIDATION: 1}
    return counts


def check(
    config: CurateConfig,
    srcs: list[sources.Source],
    counts: dict[str, int],
    totals: dict[str, int],
    ctx: Context,
) -> None:
    """Log what the filters kept and how it was split; refuse a split with nothing to train on."""
    n_in = sum(s.stats.documents_in for s in srcs)
    ctx.log(
        f"read {n_in} documents from {len(srcs)} source(s); kept {sum(counts.values())} "
        f"(removed: {', '.join(f'{k} {v}' for k, v in totals.items())})"
    )
    if not sum(counts.values()):
        raise StageError(filters.explain_empty(totals, config))
    if not counts[TRAIN]:
        raise StageError(
            f"only {counts[VALIDATION]} document(s) left after filtering: nothing to train "
            "on once validation is held out; add data or relax the filters"
        )
    ctx.log(
        f"split {counts[TRAIN]} train / {counts[VALIDATION]} validation documents "
        f"(val_fraction {config.val_fraction}, by content hash)"
    )
