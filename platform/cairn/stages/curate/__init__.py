"""The `curate` stage kind: raw text in, a tokenizer and packed token shards out.

It is the first step of every workflow: it turns files of text (JSONL, Parquet, plain text,
Markdown, optionally gzip/zstd) into what pretraining reads, streaming them through Ray Data, and
records what it dropped and why, so a dataset can be audited back to its sources. The pipeline is
in `pipeline.py`; this module only declares the kind.

Resources: `num_workers` x `cpus_per_worker` is how many CPUs the step's Ray Data tasks may use
at once (the driver itself holds none).
"""

from __future__ import annotations

from typing import Any

from cairn.stage import ArtifactType, Context, InputSlot, Resources, StageSpec, register
from cairn.stages.curate.config import CurateConfig


def run(config: CurateConfig, inputs: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Curate `inputs["sources"]` into `ctx.output_path("dataset")`; see `pipeline.curate`."""
    # Imported here: the pipeline pulls in numpy and tokenizers, and the stage registry imports
    # every kind just to list them.
    from cairn.stages.curate.pipeline import curate

    return {"dataset": curate(config, inputs, ctx)}


SPEC = register(
    StageSpec(
        kind="curate",
        config_model=CurateConfig,
        inputs={
            "sources": InputSlot(
                ArtifactType.RAW,
                many=True,
                doc="files or directories of text: .jsonl (one object per line, text under "
                "text_field), .parquet (column text_field), .txt/.md/.rst (one document per file or "
                "per paragraph), each optionally .gz or .zst; local paths or fsspec URIs",
            ),
            "eval_tasks": InputSlot(
                ArtifactType.RAW,
                many=True,
                optional=True,
                doc="the lm-eval task folders that evaluate steps will score the trained model on: "
                "every training document is checked for n-gram overlap with their items "
                "(config `decontaminate`), and evaluate refuses tasks that were not checked",
            ),
        },
        outputs={"dataset": ArtifactType.DATASET},
        run=run,
        launcher="driver",
        uses_gpus=False,  # tokenizing, filtering and dedup are CPU work in Ray Data tasks
        default_resources=Resources(num_workers=2, cpus_per_worker=1),
        result_packages=("tokenizers", "py3langid"),
        # decontamination reads task folders with the evaluate stage's own reader
        shared_code=("cairn.stages.evaluate.taskfolder",),
        doc="Read, scrub, filter, decontaminate and dedup (exact and MinHash) text on Ray Data, "
        "mix sources by weight, train a byte-level BPE tokenizer, and pack train/validation token "
        "shards of seq_len tokens, with a data card.",
    )
)

__all__ = ["SPEC", "CurateConfig", "run"]
