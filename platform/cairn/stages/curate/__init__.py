"""The `curate` stage kind: raw text in, a tokenizer and packed token shards out.

It is the first step of every workflow: it turns files of text (JSONL, plain text, Markdown)
into what pretraining reads, and records what it dropped and why, so a dataset can be audited
back to its sources. The pipeline is in `pipeline.py`; this module only declares the kind.
"""

from __future__ import annotations

from typing import Any

from cairn.stages.base import ArtifactType, Context, InputSlot, StageSpec
from cairn.stages.curate.config import CurateConfig


def run(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Curate `inputs["sources"]` into `ctx.output_path("dataset")`; see `pipeline.curate`."""
    # Imported here: the pipeline pulls in numpy and tokenizers, and the stage registry imports
    # every kind just to list them.
    from cairn.stages.curate.pipeline import curate

    return {"dataset": curate(config, inputs, ctx)}


SPEC = StageSpec(
    kind="curate",
    config_model=CurateConfig,
    inputs={
        "sources": InputSlot(
            ArtifactType.RAW,
            many=True,
            doc="files or directories of text: .jsonl (one object per line, text under "
            "text_field), .txt/.md/.rst (one document per file or per paragraph), optionally .gz",
        )
    },
    outputs={"dataset": ArtifactType.DATASET},
    run=run,
    launcher="task",
    result_packages=("tokenizers",),
    doc="Normalise, filter and dedup text, train a byte-level BPE tokenizer, and pack "
    "train/validation token shards of seq_len tokens.",
)

__all__ = ["SPEC", "CurateConfig", "run"]
