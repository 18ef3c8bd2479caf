"""The config of an sft step (the fields every post-training kind has: posttrain/config.py)."""

from __future__ import annotations

from pydantic import Field

from cairn.stages.posttrain.config import PosttrainConfig


class SftConfig(PosttrainConfig):
    """Settings of a supervised fine-tuning step (see `PosttrainConfig` for the shared ones)."""

    lr: float = Field(2e-3, gt=0, le=1, description="peak learning rate (AdamW)")
    packing: bool = Field(
        False,
        description="pack several chats into each max_length row (best fit, none split; "
        "attention stays within a chat): fewer, fuller rows per step",
    )
