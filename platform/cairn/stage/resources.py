"""What a step asks the cluster for. Never part of a step's identity (fingerprint)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cairn.stage.numbers import refuse_loose_numbers


class Resources(BaseModel):
    """What a step asks the cluster for.

    `num_workers` is a count or, for training stages, a range `min..max` (elastic): training
    starts once `min` workers fit and grows to `max` as nodes arrive. The range is kept as
    `min_workers` + `num_workers` (the maximum, which is what the autoscaler is asked for).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    num_workers: int = Field(
        1, ge=1, le=4096, description="parallel workers (Ray Train workers), or a range 'min..max'"
    )
    min_workers: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="elastic training: start with this many (num_workers: a..b)",
    )
    cpus_per_worker: float = Field(1.0, ge=0, le=512)
    gpus_per_worker: float = Field(0.0, ge=0, le=16)
    memory_gb: float | None = Field(None, gt=0, le=16384, description="memory per worker, GiB")
    accelerator_type: str | None = Field(None, description="e.g. H100, A100 (Ray accelerator)")

    @model_validator(mode="before")
    @classmethod
    def _range(cls, data: Any) -> Any:
        """`num_workers: "2..8"` → min_workers 2, num_workers 8."""
        n = data.get("num_workers") if isinstance(data, dict) else None
        if isinstance(n, str) and ".." in n:
            lo, _, hi = n.partition("..")
            try:
                low, high = int(lo), int(hi)
            except ValueError:
                raise ValueError(
                    f"num_workers {n!r}: a range is 'min..max' with two whole numbers, e.g. '2..8'"
                ) from None
            data = {**data, "num_workers": high, "min_workers": low}
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # `num_workers: true` would otherwise be one worker, `memory_gb: .inf` unbounded.
        return refuse_loose_numbers(cls, info.field_name or "", value)

    @model_validator(mode="after")
    def _check_range(self) -> Resources:
        if self.min_workers is not None and self.min_workers > self.num_workers:
            raise ValueError(
                f"num_workers range {self.min_workers}..{self.num_workers}: min exceeds max; "
                f"fix: write it as '{self.num_workers}..{self.min_workers}'"
            )
        if self.min_workers == self.num_workers:
            self.min_workers = None  # a range of one is a fixed count
        return self

    @property
    def elastic(self) -> bool:
        return self.min_workers is not None

    def workers_text(self) -> str:
        return f"{self.min_workers}..{self.num_workers}" if self.elastic else str(self.num_workers)
