"""The `dpo` stage kind: preference tuning with Direct Preference Optimization.

Inputs: `model` (a Hugging Face model directory with its tokenizer, typically an sft step's
output) and `data` (a .jsonl file or a directory of them with `prompt`, `chosen`, `rejected`;
see `recipe.py`). The reference model is a frozen copy of the input model. Output: a `model`
directory in the same layout plus `training_metrics.jsonl` (loss and rewards/chosen,
rewards/rejected, rewards/margins, rewards/accuracies per logged step) and `loss.png`.

Training is TRL's `DPOTrainer` (`recipe.py`) inside Ray Train, through the post-training base
(`cairn.stages.posttrain`: driver, workers, data checks, chat template).
"""

from __future__ import annotations

from cairn.stage import Context, Inputs, Outputs, register
from cairn.stages.dpo.config import DpoConfig
from cairn.stages.posttrain import posttrain_spec


def run(config: DpoConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Preference-tune with Ray Train and write the `model` output (see the module docstring)."""
    from cairn.stages.dpo.recipe import DPO
    from cairn.stages.posttrain.driver import train

    return train(DPO, config, inputs, ctx)


SPEC = register(
    posttrain_spec(
        "dpo",
        DpoConfig,
        run,
        data_doc="preference rows: .jsonl file or directory",
        doc=(
            "Direct Preference Optimization on prompt/chosen/rejected rows with TRL's DPOTrainer "
            "on Ray Train, against a frozen copy of the input model."
        ),
    )
)

__all__ = ["SPEC", "DpoConfig", "run"]
