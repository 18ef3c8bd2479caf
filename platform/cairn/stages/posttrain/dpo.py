"""The `dpo` stage kind: preference tuning with Direct Preference Optimization.

Inputs: `model` (a Hugging Face model directory with its tokenizer, typically an sft step's
output) and `data` (a .jsonl file or a directory of them with `prompt`, `chosen`, `rejected`;
see `data.py`). The reference model is a frozen copy of the input model. Output: a `model`
directory in the same layout plus `training_metrics.jsonl` (loss and rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies per logged step) and `loss.png`.

Training is TRL's `DPOTrainer` inside a Ray Train `TorchTrainer` (see `driver.py`, `worker.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cairn.stages.base import (
    Context,
    Inputs,
    Outputs,
)
from cairn.stages.posttrain.config import PosttrainConfig, posttrain_spec


class DpoConfig(PosttrainConfig):
    """Settings of a preference-tuning step (see `PosttrainConfig` for the shared ones)."""

    max_steps: int | None = Field(
        60,
        ge=1,
        le=100_000_000,
        description="optimizer steps to train; null: train for `epochs` passes over the data",
    )
    beta: float = Field(
        0.1,
        gt=0,
        le=100,
        description="strength of the pull towards the reference model (higher: stay closer)",
    )
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: the DPO paper's loss; ipo and hinge: its variants"
    )


def run(config: DpoConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Preference-tune with Ray Train and write the `model` output (see the module docstring)."""
    from cairn.stages.posttrain.driver import train

    return train("dpo", config, inputs, ctx)


SPEC = posttrain_spec(
    "dpo",
    DpoConfig,
    run,
    data_doc="preference rows: .jsonl file or directory",
    doc=(
        "Direct Preference Optimization on prompt/chosen/rejected rows with TRL's DPOTrainer "
        "on Ray Train, against a frozen copy of the input model."
    ),
)

__all__ = ["SPEC", "DpoConfig", "run"]
