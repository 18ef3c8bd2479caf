"""The `Tracker` seam: where the engine mirrors runs, metrics, datasets and models.

`MlflowTracker` (mlflow.py) writes to a real MLflow tracking store (SQLite under `CAIRN_HOME` by
default, or `MLFLOW_TRACKING_URI`); `MemoryTracker` (memory.py, shipped as
`cairn.testing.MemoryTracker`) keeps everything in dicts for unit tests; `BackgroundTracker`
(background.py) runs either off the engine's critical path. One parent run per workflow run, one
nested run per step run; metrics always go in batches (one `log_batch` per 1000 points, never one
call per scalar); datasets carry Cairn's sha256 digest, not MLflow's sampled one; models become
MLflow 3 LoggedModels linked to their source run and, as model inputs, to the runs that read
them (so MLflow walks model → model → dataset); the released model is logged with its files and
registered, loadable from `models:/NAME/VERSION`; a cache hit's run names the run that computed
its artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class DatasetRef:
    name: str
    digest: str
    uri: str
    type: str
    slot: str


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    ts: int


class Tracker(Protocol):
    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str: ...
    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str: ...
    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None: ...
    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None: ...
    # Input models: the LoggedModel of each digest as a model input (a dataset where none is).
    def log_model_inputs(self, mlflow_run_id: str, models: list[DatasetRef]) -> None: ...
    # A model artifact as a LoggedModel (tag cairn.artifact_digest), without its files.
    def log_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str: ...
    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None: ...
    # The released model with its files, registered; its input and scores are those of the
    # LoggedModel of tags["cairn.model_digest"]. Returns the version.
    def register_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str: ...
    # A cache hit's run: tag cairn.computed_by = the run that computed `digests` (by output).
    def link_cached(
        self, mlflow_run_id: str, fingerprint: str, digests: dict[str, str]
    ) -> None: ...
    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None: ...
    def end(self, mlflow_run_id: str, status: str) -> None: ...
    # The read side (the dashboard's charts): every metric of a run, as (step, value) by step.
    def history(self, mlflow_run_id: str) -> dict[str, list[tuple[int, float]]]: ...


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → MLflow params (`model.hidden_size` = `128`), values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = (json.dumps(v) if not isinstance(v, str) else v)[:6000]
    return out


def digest_tags(digests: dict[str, str]) -> dict[str, str]:
    """A step run's output digests (by output name) as its tags: `cairn.artifact_digest` for a
    step of one output, `cairn.artifact_digest.<output>` for each of several."""
    if len(digests) == 1:
        return {"cairn.artifact_digest": next(iter(digests.values()))}
    return {f"cairn.artifact_digest.{k}": v for k, v in digests.items()}


class TrackingError(Exception):
    """A tracker call failed in the background; raised at the next `flush`."""


# A Cairn step or run state as MLflow's run status.
STATUS = {"succeeded": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}
