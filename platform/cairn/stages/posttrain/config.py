"""The config fields `sft` and `dpo` share: optimisation, sequence length, checkpoints, logging.

`lora` trains a low-rank adapter instead of every weight (`LoraSettings`, and `lora.py` for
what it does to training and the outputs).

The defaults fit the quickstart (a 2-layer, 128-wide model pretrained on Shakespeare, trained on
2 CPU workers in well under a minute); a real model wants a learning rate around 1e-5 to 1e-6.
Only `seed`, the data and these fields decide the weights: the number of workers does not (the
global batch is split across them), so resources stay out of the fingerprint.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cairn.stage import Runtime, StageConfig, TrainerConfig

# The attention and MLP projections of Llama-style models (Llama, Mistral, Qwen, OLMo, Cairn's
# own pretrain output): LoRA on all of them is what the QLoRA paper found to match full
# fine-tuning, where attention alone falls short.
LLAMA_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


class LoraSettings(StageConfig):
    """LoRA (Hu et al., 2021): each targeted weight matrix W stays frozen and a low-rank update
    B·A (B: out×r, A: r×in) is trained beside it, so the layer computes W·x + (alpha/r)·B·A·x.
    B starts at zero, so training starts from the input model exactly. The step's `model`
    output is W + (alpha/r)·B·A merged into plain weights; the update alone is its `adapter`."""

    r: int = Field(
        16,
        ge=1,
        le=4096,
        description="rank of each update: trainable parameters grow linearly with it; 8-64 is "
        "common, and a rank near the layer width is full fine-tuning at a higher cost",
    )
    alpha: int = Field(
        32,
        ge=1,
        le=100_000,
        description="scale of the update, applied as alpha / r (so raising r at a fixed alpha "
        "shrinks each direction's step); alpha = 2·r is a common start",
    )
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="dropout on the input of each update while training (0.05-0.1 helps small "
        "datasets); 0: none",
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: sorted(LLAMA_PROJECTIONS),
        description="the linear layers that get an update, by the last part(s) of their module "
        "name: default the attention (q/k/v/o_proj) and MLP (gate/up/down_proj) projections of "
        "Llama-style models; 'all-linear': every linear layer but the output head. A name the "
        "model lacks is an error before training",
    )

    @field_validator("target_modules")
    @classmethod
    def _names(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            return value
        if not value:
            raise ValueError(
                "is empty, so nothing would be trained; fix: name the layers (e.g. [q_proj, "
                "v_proj]), write 'all-linear', or remove it for the default projections"
            )
        for name in value:
            if not _MODULE_NAME.fullmatch(name):
                raise ValueError(
                    f"'{name}' is not a module name; fix: give names such as q_proj or "
                    "self_attn.q_proj (letters, digits, '_', parts joined by '.')"
                )
        repeated = sorted({n for n in value if value.count(n) > 1})
        if repeated:
            raise ValueError(f"names {', '.join(repeated)} more than once; fix: list each once")
        # The order of the names does not change the result, so it does not change the
        # fingerprint either.
        return sorted(value)


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
    lora: LoraSettings | None = Field(
        None,
        description="train a LoRA adapter instead of every weight (r, alpha, dropout, "
        "target_modules): the `model` output is the input model with the adapter merged in, "
        "in the same plain layout, and the adapter is the step's `adapter` output; "
        "`lora: {}` takes the defaults (LoRA usually wants a learning rate about ten times "
        "full fine-tuning's). null: full fine-tuning",
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
