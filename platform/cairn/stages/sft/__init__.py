"""The `sft` stage kind: supervised fine-tuning of a causal LM on chats.

Inputs: `model` (a Hugging Face model directory with its tokenizer, e.g. a pretrain step's output)
and `data` (a .jsonl file or a directory of them; rows as `messages` or `prompt`/`completion`,
see `recipe.py`). The loss is on assistant tokens only: what the model should say, not what it is
told. Output: a `model` directory in the same layout, its tokenizer carrying the chat template,
plus `training_metrics.jsonl` and `loss.png`.

Training is TRL's `SFTTrainer` (`recipe.py`) inside Ray Train, through the post-training base
(`cairn.stages.posttrain`: driver, workers, data checks, chat template).
"""

from __future__ import annotations

from cairn.stage import Context, Inputs, Outputs, register
from cairn.stages.posttrain import posttrain_spec
from cairn.stages.sft.config import SftConfig


def run(config: SftConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Fine-tune with Ray Train and write the `model` output (see the module docstring)."""
    from cairn.stages.posttrain.driver import train
    from cairn.stages.sft.recipe import SFT

    return train(SFT, config, inputs, ctx)


SPEC = register(
    posttrain_spec(
        "sft",
        SftConfig,
        run,
        data_doc="chat rows: .jsonl file or directory",
        doc=(
            "Supervised fine-tuning on chat data (loss on assistant turns only) with TRL's "
            "SFTTrainer on Ray Train; writes the model with its chat template."
        ),
    )
)

__all__ = ["SPEC", "SftConfig", "run"]
