"""The base the post-training kinds build on: `sft` and `dpo` (folders of their own) share it.

Both take a `model` (a Hugging Face directory with its tokenizer, e.g. a pretrain step's output)
and `data` (JSONL files), and write a `model` of the same layout: weights, config, generation
config, the tokenizer with its chat template, `training_metrics.jsonl` and `loss.png`. With
`lora` set they train a LoRA adapter instead of every weight: the `model` output is the input
model with the adapter merged in (same layout), and the adapter is an `adapter` output of its own
(`lora.py`).

They share everything but their `Recipe` (recipe.py): `data` reads and checks the rows (every
error names file, line and field, before Ray Train starts), `chat` holds the chat template and the
model checks, `driver` launches Ray Train through `cairn.stage.raytrain`, whose workers
(`worker`) run the recipe's TRL trainer built with the shared arguments (`trainers`).
"""

from __future__ import annotations

from cairn.stage import ArtifactType, InputSlot, Resources, RunFn, StageSpec
from cairn.stages.posttrain.config import PosttrainConfig


def posttrain_spec(
    kind: str, config_model: type[PosttrainConfig], run: RunFn, data_doc: str, doc: str
) -> StageSpec:
    """The spec both post-training kinds share but for their config, data and description:
    a model and a JSONL data input, a model output (and with `lora` an adapter), TRL on Ray
    Train."""
    return StageSpec(
        kind=kind,
        config_model=config_model,
        inputs={
            "model": InputSlot(
                ArtifactType.MODEL, doc="Hugging Face model directory with tokenizer"
            ),
            "data": InputSlot(ArtifactType.RAW, doc=data_doc),
        },
        outputs={"model": ArtifactType.MODEL, "adapter": ArtifactType.ADAPTER},
        # With `lora`, the step also writes its adapter, and the model is made from it (the
        # input model with the adapter merged in).
        optional_outputs={"adapter": "lora"},
        output_parents={"model": ("adapter",)},
        run=run,
        launcher="trainer",
        shared_code=("cairn.stage.raytrain", "cairn.stages.posttrain"),
        result_packages=("torch", "transformers", "trl", "peft"),
        default_resources=Resources(num_workers=2, cpus_per_worker=1),
        doc=doc,
    )
