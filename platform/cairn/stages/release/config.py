"""The config of a release step: what the release says about itself."""

from __future__ import annotations

from pydantic import Field

from cairn.stage import Runtime, StageConfig


class ReleaseConfig(StageConfig):
    """What the release says about itself; its contents come from the model's ancestry."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="release name (and MLflow registered model name); default: the workflow's",
    )
    description: str = Field("", description="a paragraph for the model card's opening")
    license: str = Field("Apache-2.0", description="licence of the released weights and code")
    limitations: str = Field(
        "A small research model trained on a narrow corpus: it produces plausible-looking but "
        "unreliable text and must not be used for decisions about people.",
        description="the model card's limitations section",
    )
    copy_checkpoints_max_gb: float = Field(
        2.0,
        ge=0,
        description="copy intermediate checkpoints into the bundle up to this total size; "
        "above it, list them with digests and URIs instead",
    )
    include_sources: bool = Field(
        False,
        description="carry a copy of every raw source the workflow names by a relative path "
        "(under sources/, as the workflow wrote it), so `cairn reproduce` needs nothing but the "
        "bundle; sources given as URIs are recorded with their digests, not copied",
    )
    include_sources_max_mb: float = Field(
        100.0,
        ge=0,
        description="with include_sources, the most the copies may take; above it the release "
        "fails and says which sources are large (record them as URIs, or raise the limit)",
    )
    register_in_mlflow: Runtime[bool] = Field(
        True,
        description="register the model in the MLflow Model Registry",
    )
