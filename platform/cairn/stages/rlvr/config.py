"""The config of an rlvr step: GRPO's settings on top of the fields every post-training kind has.

The defaults fit the tiny CPU recipe (`workflows/tulu3.yaml`: a 2-layer model, 8 completions per
prompt of at most 24 tokens). For a real model Tülu 3's ranges apply: learning rate 3e-7 to 1e-6,
β 0.01 to 0.05, 4 to 16 completions per prompt, completions up to 1k-2k tokens
(`workflows/tulu3-8b-gpu.yaml` explains its choices).

`global_batch_size` counts completions, as TRL's batch sizes do: each optimizer step trains on
global_batch_size / num_generations prompts with num_generations completions each.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cairn.stages.posttrain.config import PosttrainConfig


class RlvrConfig(PosttrainConfig):
    """Settings of a reinforcement-learning step with verifiable rewards (GRPO)."""

    max_steps: int | None = Field(
        40,
        ge=1,
        le=100_000_000,
        description="optimizer steps (each one generates a fresh batch of completions); null: "
        "train for `epochs` passes over the prompts",
    )
    global_batch_size: int = Field(
        32,
        ge=1,
        le=1_000_000,
        description="completions per optimizer step across all workers (prompts per step × "
        "num_generations); divisible by num_generations and by num_workers",
    )
    lr: float = Field(1e-4, gt=0, le=1, description="peak learning rate (AdamW)")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        "constant", description="decay after warmup: to 0 (cosine, linear) or none (constant)"
    )
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warmup steps")
    max_length: int = Field(
        128,
        ge=8,
        le=1_048_576,
        description="tokens of prompt + completion at most (the prompt as the chat template lays "
        "it out); a row whose prompt leaves less than max_completion_length is an error",
    )
    num_generations: int = Field(
        8,
        ge=2,
        le=1024,
        description="completions sampled per prompt: GRPO's group, whose rewards are compared "
        "with each other (a group whose rewards are all equal teaches nothing)",
    )
    max_completion_length: int = Field(
        32, ge=1, le=1_048_576, description="tokens generated per completion at most"
    )
    temperature: float = Field(1.0, gt=0, le=10, description="sampling temperature of the rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the rollouts")
    beta: float = Field(
        0.05,
        ge=0,
        le=100,
        description="KL penalty towards the frozen reference (the input model); Tülu 3 used "
        "0.05; 0 loads no reference model",
    )
    epsilon: float = Field(0.2, gt=0, le=10, description="clip range of the policy ratio (PPO's ε)")
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = Field(
        "grpo",
        description="how token losses are averaged: grpo (per sequence, then batch, as the "
        "GRPO paper), dapo, dr_grpo or bnpo (TRL's variants)",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="divide advantages by the std of the group (GRPO), of the batch, or not "
        "(Dr. GRPO)",
    )
    verifiers: dict[str, str] = Field(
        default_factory=dict,
        description="verifier per `dataset` value of the rows, over the defaults (gsm8k: "
        "final_number, math: exact_match, ifeval: ifeval); e.g. {arith: final_number}",
    )
    rollout_engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto",
        description="what samples the completions: auto takes vLLM (TRL's colocate mode) on "
        "GPU workers where the official vLLM build is installed, else transformers' generate",
    )

    def verifier_map(self) -> dict[str, str]:
        """The verifier of each `dataset` value: the defaults, then this step's own. Names are
        matched without regard to case (Tülu 3's mixed RLVR set writes `MATH`)."""
        from cairn.stages.rlvr.verifiers import DEFAULT_DATASETS

        return {k.lower(): v for k, v in {**DEFAULT_DATASETS, **self.verifiers}.items()}

    @model_validator(mode="after")
    def _check_verifiers(self) -> RlvrConfig:
        from cairn.stages.rlvr.verifiers import REGISTRY

        for dataset, name in self.verifiers.items():
            if name not in REGISTRY:
                raise ValueError(
                    f"verifiers.{dataset} names '{name}', which is no verifier; fix: use one of "
                    f"{', '.join(sorted(REGISTRY))}"
                )
        return self

    @model_validator(mode="after")
    def _check_group(self) -> RlvrConfig:
        if self.global_batch_size % self.num_generations:
            n = self.num_generations
            lower = max(n, self.global_batch_size // n * n)
            raise ValueError(
                f"global_batch_size ({self.global_batch_size}) must be a multiple of "
                f"num_generations ({n}): every prompt's whole group is trained in the same step; "
                f"fix: set global_batch_size to {lower} or {lower + n}"
            )
        if self.max_completion_length >= self.max_length:
            raise ValueError(
                f"max_completion_length ({self.max_completion_length}) leaves no room for the "
                f"prompt in max_length ({self.max_length}); fix: raise max_length above "
                f"{self.max_completion_length}"
            )
        return self
