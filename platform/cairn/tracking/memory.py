"""The in-memory tracker: records what the engine logged, for unit tests to assert on (shipped as
`cairn.testing.MemoryTracker`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cairn.tracking import STATUS, DatasetRef, MetricPoint, digest_tags, flatten


@dataclass
class MemoryRun:
    """One run as MLflow would hold it: its parent run (None for the workflow's run), params
    (flattened), tags, metrics, datasets, logged model ids (its outputs), the model ids it
    read (model inputs) and final status."""

    parent: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[MetricPoint] = field(default_factory=list)
    datasets: list[DatasetRef] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    model_inputs: list[str] = field(default_factory=list)
    status: str = "RUNNING"


class MemoryTracker:
    """The in-memory fake: records what the engine logged, for unit tests to assert on."""

    def __init__(self) -> None:
        self.runs: dict[str, MemoryRun] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.registry: dict[str, list[dict[str, Any]]] = {}
        self.calls = 0

    def _new(self, parent: str | None, params: dict[str, Any], tags: dict[str, str]) -> str:
        rid = f"mem-{len(self.runs)}"
        self.runs[rid] = MemoryRun(parent, flatten(params), dict(tags))
        return rid

    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        self.calls += 1
        return self._new(None, params, {"cairn.run_id": run_id, **tags})

    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        self.calls += 1
        return self._new(parent, params, {"cairn.run_id": run_id, "cairn.step": step, **tags})

    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].metrics.extend(points)

    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].datasets.extend(datasets)

    def log_model_inputs(self, mlflow_run_id: str, models: list[DatasetRef]) -> None:
        self.calls += 1
        for m in models:
            mid = self._model_id(m.digest)
            if mid:
                self.runs[mlflow_run_id].model_inputs.append(mid)
            else:
                self.runs[mlflow_run_id].datasets.append(m)

    def _model_id(self, digest: str) -> str | None:
        return next(
            (k for k, m in self.models.items() if m["tags"].get("cairn.artifact_digest") == digest),
            None,
        )

    def log_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
        files: bool = False,
    ) -> str:
        """`files`: logged with its files (the released model) or not (every other model)."""
        self.calls += 1
        mid = f"m-{len(self.models)}"
        self.models[mid] = {
            "name": name,
            "run": mlflow_run_id,
            "dir": local_dir,
            "tags": tags,
            "params": flatten(params),
            "files": files,
        }
        self.runs[mlflow_run_id].models.append(mid)
        return mid

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        mid = self._model_id(model_digest)
        if mid:
            self.models[mid].setdefault("metrics", {}).update(metrics)
            self.runs[mlflow_run_id].tags.setdefault("cairn.evaluated_model", mid)
        self.log_metrics(
            mlflow_run_id, [MetricPoint(k, float(v), 0, 0) for k, v in metrics.items()]
        )

    def register_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        mid = self.log_model(mlflow_run_id, name, local_dir, tags, params, files=True)
        released = self._model_id(tags.get("cairn.model_digest", ""))
        if released and "metrics" in self.models[released]:
            self.models[mid]["metrics"] = dict(self.models[released]["metrics"])
        versions = self.registry.setdefault(name, [])
        versions.append({"model_id": mid, "tags": tags})
        return str(len(versions))

    def link_cached(self, mlflow_run_id: str, fingerprint: str, digests: dict[str, str]) -> None:
        self.calls += 1
        want = {
            "cairn.fingerprint": fingerprint,
            "cairn.state": "succeeded",
            **digest_tags(digests),
        }
        source = next(
            (k for k, r in self.runs.items() if all(r.tags.get(t) == v for t, v in want.items())),
            "unknown",
        )
        self.runs[mlflow_run_id].tags["cairn.computed_by"] = source

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].tags.update(tags)

    def end(self, mlflow_run_id: str, status: str) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].status = STATUS.get(status, "FAILED")

    def history(self, mlflow_run_id: str) -> dict[str, list[tuple[int, float]]]:
        run = self.runs.get(mlflow_run_id)
        out: dict[str, list[tuple[int, float]]] = {}
        for p in sorted(run.metrics if run else [], key=lambda p: (p.step, p.ts)):
            out.setdefault(p.key, []).append((p.step, p.value))
        return dict(sorted(out.items()))
