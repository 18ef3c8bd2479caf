"""What makes one post-training kind itself, as an object the shared driver and workers call.

sft, dpo (and next rlvr) share reading JSONL rows, checking the model and its chat template,
measuring lengths, launching Ray Train, running a TRL trainer on every worker and exporting the
model. A kind differs only in what a row must hold, how long a row is once templated, which TRL
trainer it builds and what it adds to the output's metadata: its `Recipe` (sft/recipe.py,
dpo/recipe.py) answers those, so the shared code has no `if kind == ...` branches.

A recipe is a module-level instance of a plain class: it pickles by reference, so the driver
hands it to the Ray Train workers, which import the kind's module to find it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn.stages.posttrain.config import PosttrainConfig
    from cairn.stages.posttrain.data import Example, Row


class Recipe(ABC):
    kind: str
    # The chat template must mark the trained tokens with {% generation %} (sft's
    # assistant-only loss); a template without them is refused before training.
    needs_generation_markers: bool = False

    @abstractmethod
    def row(self, row: Row, obj: dict[str, Any]) -> dict[str, Any]:
        """One JSONL object, checked (errors through `row.error`), in TRL's conversational form."""

    @abstractmethod
    def lengths(self, fields: dict[str, Any], tok: Any) -> tuple[int, list[int]]:
        """Tokens of the prompt (what is never trained) and of each full sequence the trainer
        builds from the row, as the chat template lays them out (`chat.ids`)."""

    @abstractmethod
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
        """The TRL trainer, from the TrainingArguments every kind shares (`args`). With
        `peft_config` (a `peft.LoraConfig`, when the step sets `lora`) the trainer wraps
        `model` in a peft model and trains the adapter only: pass it to TRL's trainer."""

    def check(self, examples: list[Example], config: PosttrainConfig, tok: Any) -> None:
        """What the rows must satisfy given the step's config (rlvr: a verifier for each row's
        `dataset`, room for the completion), raised as a StageError naming file and line.
        sft and dpo need nothing beyond their rows' own checks."""
        return None

    def recorders(self, config: PosttrainConfig, rank: int) -> list[Any]:
        """Trainer callbacks that record what this kind produces besides the model (rlvr: its
        rollouts). Each has `attach(trainer)`, `resume(checkpoint_dir)` and `export(folder)`:
        the worker hands them the trainer, restores them from a resumable checkpoint, and
        exports them beside the model (they save into each checkpoint themselves)."""
        return []

    def metadata(self, last: dict[str, Any]) -> dict[str, Any]:
        """What the output's metadata adds from the last logged row of metrics."""
        return {}
