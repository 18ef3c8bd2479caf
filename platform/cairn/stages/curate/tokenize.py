"""The tokenize phase: every kept document encoded once, its tokens appended to its split's file.

The driver keeps no text: `Documents` records, per document, where its tokens start in its
split's token file and how many there are (its EOS included), which is all packing needs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from cairn.stage import Context
from cairn.stages.curate import scratch, sources, tokenizer
from cairn.stages.curate.card import CardStats
from cairn.stages.curate.documents import Documents
from cairn.stages.curate.pack import TRAIN, VALIDATION


def run(
    tok: Tokenizer, srcs: list[sources.Source], stats: CardStats, scratch_dir: Path, ctx: Context
) -> Documents:
    """Encode every kept document; tokens go to one int32 file per split.

    On this node, batch by batch, with the tokenizers library's own threads (one per core): it
    is as fast as raw `encode_batch` (bench/curation.py) and, unlike a Ray Data pass, costs no
    start-up. Across nodes the same `table_encoder` is a Ray Data `map_batches` function.
    """
    started = time.monotonic()
    encode = tokenizer.table_encoder(tok)
    docs = Documents()
    files = {s: open(scratch_dir / f"tokens-{s}.bin", "wb") for s in (TRAIN, VALIDATION)}  # noqa: SIM115 (closed below)
    written = dict.fromkeys(files, 0)
    try:
        for batch in scratch.batches(scratch_dir / "docs.parquet"):
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
    ctx.log(f"tokenized {sum(docs.tokens)} tokens in {time.monotonic() - started:.1f}s")
    return docs
