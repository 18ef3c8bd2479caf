"""The stage protocol: what every stage kind provides and what it may use.

A stage kind is a `StageSpec`: a pydantic config model, the artifact types it takes and makes,
default resources and one function `run(config, inputs, ctx) -> outputs`. Stage code writes its
files under `ctx.output_path(name)` and reports through `ctx`; it never touches run state, the
database or MLflow (only the engine does), so the same function runs inline in a unit test, in a
Ray task, or as the driver of a Ray Train job.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ArtifactType(StrEnum):
    """What an artifact is. `raw` is external data and a root of the lineage graph."""

    RAW = "raw"
    DATASET = "dataset"
    TOKENIZER = "tokenizer"
    MODEL = "model"
    CHECKPOINT = "checkpoint"
    EVAL_REPORT = "eval_report"
    ENDPOINT = "endpoint"
    RELEASE = "release"


class Resources(BaseModel):
    """What a step asks the cluster for. Never part of a step's identity (fingerprint).

    `num_workers` is a count or, for training stages, a range `min..max` (elastic): training
    starts once `min` workers fit and grows to `max` as nodes arrive. The range is kept as
    `min_workers` + `num_workers` (the maximum, which is what the autoscaler is asked for).
    """

    model_config = ConfigDict(extra="forbid")

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


class StageConfig(BaseModel):
    """Base of every stage's config model: unknown fields are errors, not silently ignored.

    Fields that do not change results (logging cadence, batch sizes chosen only for memory) are
    declared with `json_schema_extra={"identity": False}` and left out of the fingerprint.
    """

    model_config = ConfigDict(extra="forbid")

    def identity(self) -> dict[str, Any]:
        """The config fields that change the result, as plain JSON-able data."""
        data = self.model_dump(mode="json")
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("identity") is False:
                data.pop(name, None)
        return data


@dataclass(frozen=True)
class InputSlot:
    """A named input of a stage: the artifact type it accepts and whether it takes several."""

    type: ArtifactType
    many: bool = False
    optional: bool = False
    doc: str = ""


@dataclass(frozen=True)
class InputArtifact:
    """An input as a stage sees it: a local directory (or file) with a verified manifest."""

    path: Path
    type: ArtifactType
    digest: str
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # the reference it came from, e.g. "corpus.dataset" or "data/plays"


class Context(Protocol):
    """What a running stage may use. Implemented by the engine (`cairn.context`)."""

    run_id: str
    step: str
    resources: Resources
    checkpoint_dir: Path
    scratch_dir: Path
    # The run's workflow: {name, path, digest, git, text}; empty when a stage runs by hand.
    workflow: dict[str, Any]
    # For kinds with reads_compute: {ancestor digest: {run_id, step, kind, attempts, usage}}.
    compute: dict[str, Any]

    def output_path(self, name: str) -> Path: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def progress(self, done: float, total: float | None = None, message: str = "") -> None: ...
    def log(self, message: str) -> None: ...
    def event(self, type: str, message: str, **data: Any) -> None: ...
    def usage(self, record: dict[str, Any]) -> None: ...
    def cancelled(self) -> bool: ...
    def check_cancelled(self) -> None: ...


Inputs = dict[str, "InputArtifact | list[InputArtifact]"]
Outputs = dict[str, dict[str, Any]]
RunFn = Callable[[Any, Inputs, Context], Outputs]


@dataclass(frozen=True)
class StageSpec:
    """Everything the engine needs to know about a stage kind.

    `launcher` says how the engine places the stage's driver: "task" runs it as one Ray task with
    the step's resources; "trainer" runs it as a zero-CPU task that starts its own Ray Train
    workers with the step's resources (so the driver does not take a CPU its workers need);
    "driver" runs it as a zero-CPU task whose Ray Data tasks use up to the step's resources.
    `result_packages` are the packages whose versions change results and so enter the fingerprint.
    `cacheable=False` makes the step run every time (its output describes something live).
    `shared_code` names modules outside the kind's own package whose source changes its results
    (e.g. `cairn.stages.raytrain`): they enter its code version too.
    `elastic=True`: the stage accepts `resources.num_workers: min..max` (Ray Train elastic).
    `reads_compute=True` gives the stage `ctx.compute`: what every ancestor artifact's step cost
    (the release publishes it).
    """

    kind: str
    config_model: type[StageConfig]
    inputs: dict[str, InputSlot]
    outputs: dict[str, ArtifactType]
    run: RunFn
    default_resources: Resources = field(default_factory=Resources)
    launcher: str = "task"
    result_packages: tuple[str, ...] = ()
    shared_code: tuple[str, ...] = ()
    cacheable: bool = True
    reads_compute: bool = False
    elastic: bool = False
    doc: str = ""

    def code_version(self) -> str:
        """sha256 of the stage's module source: editing a stage invalidates its cache."""
        module = inspect.getmodule(self.run)
        if module is None or module.__file__ is None:
            return hashlib.sha256(inspect.getsource(self.run).encode()).hexdigest()
        path = Path(module.__file__)
        # A kind written as a package (stages/pretrain/) is versioned by all of its modules.
        files = [path] if path.parent.name == "stages" else sorted(path.parent.rglob("*.py"))
        h = hashlib.sha256()
        for f in files:
            h.update(f.relative_to(path.parent).as_posix().encode() + b"\0" + f.read_bytes())
        for name in self.shared_code:
            shared = importlib.import_module(name)
            h.update(name.encode() + b"\0" + Path(str(shared.__file__)).read_bytes())
        return h.hexdigest()
