"""The config of a pretraining step: the model's shape and how it is optimised."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cairn.stage import Runtime, TrainerConfig

# Head sizes vLLM's CPU attention kernels support; other sizes fail at the first forward pass.
SUPPORTED_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 256)


class PretrainConfig(TrainerConfig):
    """Model shape and optimisation settings of a pretraining step."""

    # --- model shape ---
    hidden_size: int = Field(128, ge=32, le=65536, description="width of the residual stream")
    num_layers: int = Field(2, ge=1, le=1024, description="number of transformer blocks")
    num_heads: int = Field(2, ge=1, le=1024, description="attention (query) heads")
    num_kv_heads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="key/value heads (grouped-query attention); default num_heads",
    )
    intermediate_size: int | None = Field(
        None, ge=1, le=1_048_576, description="MLP hidden width; default 4 × hidden_size"
    )
    rope_theta: float = Field(10000.0, gt=0, description="RoPE base period")
    init_std: float = Field(0.02, gt=0, le=1, description="std of the normal weight init")

    # --- optimisation ---
    max_steps: int = Field(200, ge=1, le=100_000_000, description="optimizer steps to train")
    global_batch_size: int = Field(
        16,
        ge=1,
        le=1_000_000,
        description="sequences per optimizer step across all workers; divisible by num_workers",
    )
    lr: float = Field(3e-3, gt=0, le=1, description="peak learning rate (AdamW)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final LR as a fraction of lr")
    warmup_steps: int = Field(20, ge=0, description="linear LR warmup steps, then cosine decay")
    weight_decay: float = Field(0.1, ge=0, le=10, description="AdamW decoupled weight decay")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW (beta1, beta2)")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    seed: int = Field(0, ge=0, description="seeds weight init and data order")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="bfloat16 autocast on CUDA; CPU workers always train in float32"
    )
    sharding: Literal["auto", "ddp", "fsdp"] = Field(
        "auto",
        description="how workers hold the model: ddp (a full copy each) or fsdp (FSDP2 "
        "fully_shard: 1/workers of weights, grads and AdamW state each); auto: fsdp on GPUs, "
        "ddp on CPUs",
    )

    micro_batch_size: Runtime[int | None] = Field(
        None,
        ge=1,
        description="sequences per forward/backward on a worker; a worker's share of the global "
        "batch above this is done in several and their gradients added (memory only: the "
        "result is the same batch's, to float rounding); default: the whole share at once",
    )

    # --- checkpoints and evaluation ---
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (and at end)")
    eval_every: int = Field(
        50, ge=0, description="steps between validation losses (and at end); 0: only at the end"
    )
    eval_batches: int = Field(4, ge=1, description="validation size, in global batches")

    # log_every, max_failures, keep_checkpoints: runtime fields of TrainerConfig

    @model_validator(mode="after")
    def _check_shape(self) -> PretrainConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads}); fix: pick num_heads so that hidden_size / num_heads is one "
                f"of {list(SUPPORTED_HEAD_DIMS)}"
            )
        head_dim = self.hidden_size // self.num_heads
        if head_dim not in SUPPORTED_HEAD_DIMS:
            good = [self.hidden_size // d for d in SUPPORTED_HEAD_DIMS if self.hidden_size % d == 0]
            hint = f"num_heads: {good[0]}" if good else "hidden_size: a multiple of 64"
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {head_dim} is not one of "
                f"{list(SUPPORTED_HEAD_DIMS)}, the head sizes vLLM's CPU build supports (the "
                f"serve and evaluate stages would fail at the first forward); fix: set {hint}"
            )
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}); fix: use a divisor of num_heads, or leave it unset"
            )
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}); "
                "fix: lower warmup_steps (about 10% of max_steps is typical)"
            )
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas {self.betas} must each be in [0, 1); fix: e.g. [0.9, 0.95]")
        return self
