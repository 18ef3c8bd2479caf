"""The settings of a `curate` step, kept apart so the pipeline modules can share them.

Each filter owns its settings next to the check that reads them (`quality.QualityConfig`,
`language.LanguageConfig`, `decontam.DecontamConfig`, `minhash.FuzzyConfig`); this model composes
them with the step's own fields. The length limits (`length.check`) are flat fields here.

Every field here is part of the step's identity: each one changes which documents are kept, how
they are tokenized or how the shards are laid out, so two steps that differ in any of them must
produce two different datasets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cairn.stage import StageConfig
from cairn.stages.curate.decontam import DecontamConfig
from cairn.stages.curate.language import LanguageConfig
from cairn.stages.curate.minhash import FuzzyConfig
from cairn.stages.curate.quality import QualityConfig


class SourceConfig(BaseModel):
    """What curate should know about one source beyond its files: its share of the mix, its licence."""

    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(
        None,
        gt=0,
        description="share of the mixed training tokens (weights are normalised over the "
        "sources); a source with less text than its share is repeated (up-sampled), one with "
        "more is sub-sampled; none: the source keeps its natural size",
    )
    license: str | None = Field(
        None,
        description="the licence of the source's text, as the data card should state it "
        "(default: the one the workflow states on the input, `{source: PATH, license: ...}`)",
    )


class CurateConfig(StageConfig):
    """How raw text becomes a tokenized, packed dataset."""

    text_field: str = Field(
        "text", min_length=1, description="JSONL sources: the field of each object holding the text"
    )
    split_text_files: Literal["document", "paragraph"] = Field(
        "document",
        description="plain-text sources (.txt/.md/.rst): one document per file, or one per "
        "blank-line-separated paragraph",
    )
    min_chars: int = Field(
        1, ge=1, description="drop documents shorter than this many characters (after normalising)"
    )
    max_chars: int | None = Field(
        None, ge=1, description="drop documents longer than this many characters; none: no limit"
    )
    min_words: int = Field(0, ge=0, description="drop documents with fewer words than this")
    quality: QualityConfig | None = Field(
        None,
        description="Gopher/C4 quality rules, checked on the raw text (lines and paragraphs "
        "intact); `quality: {}` turns them on with the papers' thresholds; none: off",
    )
    pii: bool = Field(
        False,
        description="replace emails, phone numbers, IP addresses, card numbers and SSNs with "
        "typed placeholders (<EMAIL>, <PHONE>, ...) before anything else, and count them",
    )
    dedup: bool = Field(True, description="drop exact duplicates of the normalised text")
    fuzzy_dedup: FuzzyConfig | None = Field(
        default_factory=FuzzyConfig,
        description="near-duplicate removal with MinHash and LSH banding (one document per "
        "cluster survives: the first in source order); none: off",
    )
    language: LanguageConfig | None = Field(
        None,
        description="keep only documents in these languages (py3langid, its model ships in "
        "the package); `language: {}` keeps English; none: off",
    )
    decontaminate: DecontamConfig = Field(
        default_factory=DecontamConfig,
        description="how training documents are checked against the `eval_tasks` input (used "
        "only when that input is given)",
    )
    on_malformed: Literal["error", "skip"] = Field(
        "error",
        description="a broken record (bad JSON, missing or non-string text field, invalid "
        "UTF-8, corrupt compressed file): stop with an error naming it, or skip it and count "
        "it per source and reason in dataset.json and the data card",
    )
    sources: dict[str, SourceConfig] = Field(
        default_factory=dict,
        description="per-source settings (weight, license), keyed by the input as written in "
        "the workflow or by its file/folder name, e.g. `plays.jsonl`, `plays` or `python-docs`",
    )
    target_tokens: int | None = Field(
        None,
        ge=1,
        description="size of the mixed training split in tokens (before packing); with weights, "
        "each source gets weight x target_tokens; none: the sum of what the sources have",
    )
    vocab_size: int = Field(
        2048,
        ge=263,  # 256 byte tokens + 5 special tokens, and room for at least a couple of merges
        le=1_048_576,
        description="target vocabulary of the byte-level BPE tokenizer (less if the data is small)",
    )
    seq_len: int = Field(128, ge=8, le=1_048_576, description="tokens per packed training sequence")
    val_fraction: float = Field(
        0.05, gt=0, lt=0.5, description="share of documents held out for validation"
    )
    seed: int = Field(
        0, ge=0, description="seeds the sub-sampling of the mix and the document order in packing"
    )
    # Left in the fingerprint on purpose: it does not change a single token, but it changes which
    # files the artifact holds, and an artifact's files must match the config that asked for it.
    shard_sequences: int = Field(
        4096, ge=1, description="most sequences per .npy shard file (file layout only)"
    )

    @model_validator(mode="after")
    def _max_at_least_min(self) -> CurateConfig:
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError(
                f"max_chars ({self.max_chars}) is below min_chars ({self.min_chars}): every "
                "document would be dropped; raise max_chars or lower min_chars"
            )
        return self
