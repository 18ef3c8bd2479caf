"""The `sft` stage kind: supervised fine-tuning of a causal LM on chats.

Inputs: `model` (a Hugging Face model directory with its tokenizer, e.g. a pretrain step's output)
and `data` (a .jsonl file or a directory of them; rows as `messages` or `prompt`/`completion`,
see `data.py`). The loss is on assistant tokens only: what the model should say, not what it is
told. Output: a `model` directory in the same layout, its tokenizer carrying the chat template,
plus `training_metrics.jsonl` and `loss.png`.

Training is TRL's `SFTTrainer` inside a Ray Train `TorchTrainer` (see `driver.py`, `worker.py`).
"""

from __future__ import annotations

from pydantic import Field

from cairn.stages.base import (
    Context,
    Inputs,
    Outputs,
)
from cairn.stages.posttrain.config import PosttrainConfig, posttrain_spec


class SftConfig(PosttrainConfig):
    """Settings of a supervised fine-tuning step (see `PosttrainConfig` for the shared ones)."""

    lr: float = Field(2e-3, gt=0, le=1, description="peak learning rate (AdamW)")
    packing: bool = Field(
        False,
        description="pack several chats into each max_length row (best fit, none split; "
        "attention stays within a chat): fewer, fuller rows per step",
    )


def run(config: SftConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Fine-tune with Ray Train and write the `model` output (see the module docstring)."""
    from cairn.stages.posttrain.driver import train

    return train("sft", config, inputs, ctx)


SPEC = posttrain_spec(
    "sft",
    SftConfig,
    run,
    data_doc="chat rows: .jsonl file or directory",
    doc=(
        "Supervised fine-tuning on chat data (loss on assistant turns only) with TRL's "
        "SFTTrainer on Ray Train; writes the model with its chat template."
    ),
)

__all__ = ["SPEC", "SftConfig", "run"]
