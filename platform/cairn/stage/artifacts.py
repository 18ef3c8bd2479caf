"""What flows between steps: artifact types, and an input as a stage receives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class ArtifactType(StrEnum):
    """What an artifact is. `raw` is external data and a root of the lineage graph."""

    RAW = "raw"
    DATASET = "dataset"
    TOKENIZER = "tokenizer"
    MODEL = "model"
    # A LoRA adapter (peft's adapter_config.json + adapter_model.safetensors): a delta that
    # needs its base model; post-training's `model` output is that base with it merged in.
    ADAPTER = "adapter"
    CHECKPOINT = "checkpoint"
    EVAL_REPORT = "eval_report"
    ENDPOINT = "endpoint"
    RELEASE = "release"


@dataclass(frozen=True)
class InputArtifact:
    """An input as a stage sees it: a local directory (or file) with a verified manifest."""

    path: Path
    type: ArtifactType
    digest: str
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the reference it came from, e.g. "corpus.dataset" or "data/plays"
    uri: str = ""  # where it lies (a store URI, or the source's own path or URI)
