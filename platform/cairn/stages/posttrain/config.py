"""The config fields `sft` and `dpo` share: optimisation, sequence length, checkpoints, logging.

The defaults fit the quickstart (a 2-layer, 128-wide model pretrained on Shakespeare, trained on
2 CPU workers in well under a minute); a real model wants a learning rate around 1e-5 to 1e-6.
Only `seed`, the data and these fields decide the weights: the number of workers does not (the
global batch is split across them), so resources stay out of the fingerprint.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cairn.stage import Runtime, TrainerConfig


class PosttrainConfig(TrainerConfig):
    """Optimisation and bookkeeping settings common to the post-training kinds."""

    max_steps: int | None = Field(
        100,
        ge=1,
        le=100_000_000,
        description="optimizer steps to train; null: train for `epochs` passes over the data",
    )
    epochs: float = Field(
        1.0, gt=0, le=10_000, description="passes over the data; used only if max_steps is null"
    )
    global_batch_size: int = Field(
        16,
        ge=1,
        le=1_000_000,
        description="rows per optimizer step across all workers; divisible by num_workers",
    )
    lr: float = Field(1e-3, gt=0, le=1, description="peak learning rate (AdamW)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="decay after warmup: to 0 (cosine, linear) or none (constant)"
    )
    warmup_steps: int = Field(5, ge=0, description="linear learning-rate warmup steps")
    weight_decay: float = Field(0.0, ge=0, le=10, description="AdamW decoupled weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    max_length: int = Field(
        128,
        ge=8,
        le=1_048_576,
        description="tokens per row (prompt + response), at most the model's context length; "
        "longer rows are cut at the end",
    )
    seed: int = Field(0, ge=0, description="seeds data order and anything random in training")
    checkpoint_every: int = Field(
        0,
        ge=0,
        description="steps between resumable checkpoints under the step's checkpoint directory; "
        "0: only the final model",
    )

    # --- runtime only (TrainerConfig's; post-training logs and restarts more sparingly) ---
    log_every: Runtime[int] = Field(5, ge=1, description="steps between logged metrics")
    max_failures: Runtime[int] = Field(
        1,
        ge=-1,
        description="worker-group restarts (from the last checkpoint, if any) before failing; "
        "-1: unlimited",
    )

    @model_validator(mode="after")
    def _check_schedule(self) -> PosttrainConfig:
        if self.max_steps is not None and self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}); "
                "fix: lower warmup_steps (about 10% of max_steps is typical)"
            )
        return self
