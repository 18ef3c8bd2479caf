"""dpo's recipe: preference rows, TRL's DPOTrainer against a frozen copy (posttrain/recipe.py)."""

from __future__ import annotations

from typing import Any

from cairn.stages.posttrain.chat import ids
from cairn.stages.posttrain.config import PosttrainConfig
from cairn.stages.posttrain.data import ROLES, Row, fields
from cairn.stages.posttrain.recipe import Recipe


class DpoRecipe(Recipe):
    kind = "dpo"

    def row(self, row: Row, obj: dict[str, Any]) -> dict[str, Any]:
        """`prompt` (ending with a user turn), `chosen` and `rejected` replies that differ."""
        for name in ("prompt", "chosen", "rejected"):
            if name not in obj:
                raise row.error(
                    name,
                    f"is missing (this row has {fields(obj)})",
                    'write {"prompt": ..., "chosen": ..., "rejected": ...}',
                )
        prompt = row.prompt(obj["prompt"], roles=ROLES)
        if prompt[-1]["role"] != "user":
            raise row.error(
                f"prompt[{len(prompt) - 1}].role",
                f"is {prompt[-1]['role']}, but the prompt must end with the user turn that the "
                "replies answer",
                "end the prompt with a user turn",
            )
        chosen = row.reply(obj["chosen"], "chosen")
        rejected = row.reply(obj["rejected"], "rejected")
        if chosen.strip() == rejected.strip():
            raise row.error(
                "rejected",
                "is the same text as `chosen`, so there is no preference to learn",
                "make `rejected` a worse reply, or drop the row",
            )
        return {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }

    def lengths(self, fields: dict[str, Any], tok: Any) -> tuple[int, list[int]]:
        prompt = fields["prompt"]
        full = [len(ids(tok, prompt + fields[k])) for k in ("chosen", "rejected")]
        return len(ids(tok, prompt, generation_prompt=True)), full

    def trainer(
        self,
        *,
        model: Any,
        args: dict[str, Any],
        dataset: Any,
        tokenizer: Any,
        callbacks: list[Any] | None,
        config: PosttrainConfig,
        peft_config: Any | None,
    ) -> Any:
        from trl import DPOConfig, DPOTrainer

        dpo_args = DPOConfig(
            **args,
            beta=getattr(config, "beta", 0.1),
            loss_type=[getattr(config, "loss_type", "sigmoid")],
        )
        return DPOTrainer(
            model=model,
            # A frozen copy of the input model (with LoRA: the model with its adapter switched
            # off, the input model too): the first loss is exactly ln 2.
            ref_model=None,
            args=dpo_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )

    def metadata(self, last: dict[str, Any]) -> dict[str, Any]:
        return {
            "final_reward_margin": last.get("rewards/margins"),
            "final_reward_accuracy": last.get("rewards/accuracies"),
        }


DPO = DpoRecipe()
