"""The `pretrain` stage kind: train a Llama-style causal LM from scratch on a curated dataset.

Input: the `dataset` of a curate step (token shards + tokenizer). Output: a `model` directory that
`transformers` loads as is (config.json, model.safetensors, generation_config.json, tokenizer
files) plus `training_metrics.jsonl` and `checkpoints.json`.

Training runs as a Ray Train `TorchTrainer` (DDP) with the step's resources, so it scales from 2
CPU workers to a GPU cluster unchanged. Checkpoints go under `ctx.checkpoint_dir`, which the
engine keeps per step fingerprint: re-running a step that crashed resumes from its latest
checkpoint and produces the same weights as an uninterrupted run (see `loop.py`).

The heavy imports (torch, transformers, Ray Train) happen inside `run`, so importing the registry
stays cheap. On a multi-node cluster the dataset and `ctx.checkpoint_dir` must be on storage that
every node can read.
"""

from __future__ import annotations

from cairn.stage import (
    ArtifactType,
    Context,
    Inputs,
    InputSlot,
    Outputs,
    Resources,
    StageSpec,
    register,
)
from cairn.stages.pretrain.config import SUPPORTED_HEAD_DIMS, PretrainConfig


def run(config: PretrainConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Train the model with Ray Train and write the `model` output (see the module docstring)."""
    from cairn.stages.pretrain.driver import train

    return train(config, inputs, ctx)


SPEC = register(
    StageSpec(
        kind="pretrain",
        config_model=PretrainConfig,
        inputs={"dataset": InputSlot(ArtifactType.DATASET, doc="tokenized shards from curate")},
        outputs={"model": ArtifactType.MODEL},
        run=run,
        launcher="trainer",
        elastic=True,
        shared_code=("cairn.stage.raytrain",),
        result_packages=("torch", "transformers"),
        default_resources=Resources(num_workers=2, cpus_per_worker=1),
        doc=(
            "Pretrain a Llama-style causal LM from scratch with Ray Train (DDP) on a curated "
            "dataset; resumes from its latest checkpoint when re-run after a failure."
        ),
    )
)

__all__ = ["SPEC", "SUPPORTED_HEAD_DIMS", "PretrainConfig", "run"]
