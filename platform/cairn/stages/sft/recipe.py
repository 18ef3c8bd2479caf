"""sft's recipe: chat rows, assistant-only loss, TRL's SFTTrainer (see posttrain/recipe.py)."""

from __future__ import annotations

from typing import Any

from cairn.errors import StageError
from cairn.stages.posttrain.chat import ids
from cairn.stages.posttrain.config import PosttrainConfig
from cairn.stages.posttrain.data import ROLES, Row, fields
from cairn.stages.posttrain.recipe import Recipe


class SftRecipe(Recipe):
    kind = "sft"
    needs_generation_markers = True

    def row(self, row: Row, obj: dict[str, Any]) -> dict[str, Any]:
        """`messages` (every assistant turn trained) or `prompt` + `completion` (one turn)."""
        has_messages = "messages" in obj
        has_pair = "prompt" in obj or "completion" in obj
        if has_messages and has_pair:
            raise row.error(
                "messages", "is given together with `prompt`/`completion`", "keep one form per row"
            )
        if has_messages:
            messages = row.messages(obj["messages"], "messages", ROLES)
            if not any(m["role"] == "assistant" for m in messages):
                raise row.error(
                    "messages",
                    "has no assistant turn, so there is nothing to learn",
                    'add {"role": "assistant", "content": "..."} or drop the row',
                )
            return {"messages": messages}
        if not has_pair:
            raise StageError(
                f"{row.where}: no `messages` and no `prompt`/`completion` (this row has "
                f"{fields(obj)}); fix: write "
                '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", '
                '"content": ...}]} or {"prompt": ..., "completion": ...}'
            )
        for name in ("prompt", "completion"):
            if name not in obj:
                raise row.error(name, "is missing", "give both `prompt` and `completion`")
        prompt = row.prompt(obj["prompt"], roles=("system", "user"))
        completion = row.reply(obj["completion"], "completion")
        return {"messages": [*prompt, {"role": "assistant", "content": completion}]}

    def lengths(self, fields: dict[str, Any], tok: Any) -> tuple[int, list[int]]:
        messages = fields["messages"]
        # Cut inside the first assistant turn's prefix: nothing of it would be trained.
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        # (A chat may open with the assistant: then there is no prompt to measure.)
        prompt = len(ids(tok, messages[:first], generation_prompt=True)) if first else 0
        return prompt, [len(ids(tok, messages))]

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
        from trl import SFTConfig, SFTTrainer

        sft_args = SFTConfig(
            **args,
            assistant_only_loss=True,
            packing=bool(getattr(config, "packing", False)),
            # Best-fit packing keeps every conversation whole inside one block, and the
            # collator's position ids stop packed conversations from attending to each other.
            packing_strategy="bfd",
        )
        return SFTTrainer(
            model=model,
            args=sft_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )


SFT = SftRecipe()
