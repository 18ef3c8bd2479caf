"""The config of a dpo step (the fields every post-training kind has: posttrain/config.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cairn.stages.posttrain.config import PosttrainConfig


class DpoConfig(PosttrainConfig):
    """Settings of a preference-tuning step (see `PosttrainConfig` for the shared ones)."""

    max_steps: int | None = Field(
        60,
        ge=1,
        le=100_000_000,
        description="optimizer steps to train; null: train for `epochs` passes over the data",
    )
    beta: float = Field(
        0.1,
        gt=0,
        le=100,
        description="strength of the pull towards the reference model (higher: stay closer)",
    )
    loss_type: Literal["sigmoid", "ipo", "hinge"] = Field(
        "sigmoid", description="sigmoid: the DPO paper's loss; ipo and hinge: its variants"
    )
