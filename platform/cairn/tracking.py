"""The `Tracker` seam: where the engine mirrors runs, metrics, datasets and models.

`MlflowTracker` writes to a real MLflow tracking store (SQLite under `CAIRN_HOME` by default, or
`MLFLOW_TRACKING_URI`); `MemoryTracker` keeps everything in dicts for unit tests. One parent run
per workflow run, one nested run per step run; metrics always go in batches (one `log_batch` per
1000 points, never one call per scalar); datasets carry Cairn's sha256 digest, not MLflow's
sampled one; models become MLflow 3 LoggedModels linked to their source run.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

# MLflow's dataset digest column is String(36): the full sha256 rides in the profile and a tag.
MLFLOW_DIGEST_LEN = 36


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
    def log_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str: ...
    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None: ...
    def register_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str: ...
    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None: ...
    def end(self, mlflow_run_id: str, status: str) -> None: ...


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


_STATUS = {"succeeded": "FINISHED", "cached": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


class MlflowTracker:
    def __init__(self, tracking_uri: str, artifact_root: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.artifact_root = artifact_root
        self._experiments: dict[str, str] = {}
        self._run_experiment: dict[str, str] = {}

    def _experiment(self, workflow: str) -> str:
        name = f"cairn/{workflow}"
        if name not in self._experiments:
            exp = self.client.get_experiment_by_name(name)
            self._experiments[name] = (
                exp.experiment_id
                if exp
                else self.client.create_experiment(
                    name, artifact_location=f"{self.artifact_root}/{workflow}"
                )
            )
        return self._experiments[name]

    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        exp = self._experiment(workflow)
        run = self.client.create_run(exp, run_name=run_id, tags={"cairn.run_id": run_id, **tags})
        self._run_experiment[run.info.run_id] = exp
        self._params(run.info.run_id, params)
        return run.info.run_id

    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        exp = self._run_experiment.get(parent) or self.client.get_run(parent).info.experiment_id
        run = self.client.create_run(
            exp,
            run_name=step,
            tags={"mlflow.parentRunId": parent, "cairn.run_id": run_id, "cairn.step": step, **tags},
        )
        self._run_experiment[run.info.run_id] = exp
        self._params(run.info.run_id, params)
        return run.info.run_id

    def _params(self, mlflow_run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self.client.log_batch(mlflow_run_id, params=flat[i : i + 100], synchronous=True)

    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.ts, p.step) for p in points]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(mlflow_run_id, metrics=metrics[i : i + 1000], synchronous=True)

    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        inputs = [
            DatasetInput(
                Dataset(
                    name=d.name,
                    digest=d.digest[:MLFLOW_DIGEST_LEN],
                    source_type="cairn",
                    source=json.dumps({"uri": d.uri}),
                    profile=json.dumps({"cairn_digest": d.digest, "type": d.type}),
                ),
                tags=[
                    InputTag("mlflow.data.context", d.slot),
                    InputTag("cairn.artifact_digest", d.digest),
                ],
            )
            for d in datasets
        ]
        if inputs:
            self.client.log_inputs(mlflow_run_id, datasets=inputs)

    def log_model(self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]) -> str:
        from mlflow.entities import LoggedModelOutput

        exp = self.client.get_run(mlflow_run_id).info.experiment_id
        model = self.client.create_logged_model(
            exp, name=name, source_run_id=mlflow_run_id, tags=tags, model_type="cairn"
        )
        try:
            self.client.log_model_artifacts(model.model_id, local_dir)
        except Exception:
            self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.log_outputs(mlflow_run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def _model_id(self, mlflow_run_id: str, digest: str) -> str | None:
        """The LoggedModel Cairn logged for artifact `digest`, in this run's experiment."""
        exp = self.client.get_run(mlflow_run_id).info.experiment_id
        found = self.client.search_logged_models(
            experiment_ids=[exp],
            filter_string=f"tags.`cairn.artifact_digest` = '{digest}'",
            max_results=1,
        )
        return found[0].model_id if found else None

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        """Scores of a model, logged on the evaluating run *and* tied to the model's
        LoggedModel (so they show on the model's page and in `search_logged_models`)."""
        from mlflow.entities import LoggedModelInput, Metric

        model_id = self._model_id(mlflow_run_id, model_digest)
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, 0, model_id=model_id) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(mlflow_run_id, metrics=batch[i : i + 1000], synchronous=True)
        if model_id:
            self.client.log_inputs(mlflow_run_id, models=[LoggedModelInput(model_id)])

    def register_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str:
        """Log `local_dir` as a LoggedModel and register it as a new version of `name` in the
        Model Registry, with `tags` on the version (the link is in a tag too: MLflow's
        ModelVersion.model_id can come back empty). Returns the version number."""
        from mlflow.exceptions import MlflowException

        model_id = self.log_model(mlflow_run_id, name, local_dir, tags)
        try:
            self.client.create_registered_model(name, tags={"cairn.release": name})
        except MlflowException as e:
            if "already exists" not in str(e).lower():
                raise
        # The LoggedModel's artifact location, not "models:/<id>": MLflow resolves the latter
        # through the process-global tracking URI, not this client's (it would create and
        # search a stray ./mlflow.db).
        version = self.client.create_model_version(
            name,
            source=self.client.get_logged_model(model_id).artifact_location,
            run_id=mlflow_run_id,
            tags={**tags, "cairn.logged_model_id": model_id},
            model_id=model_id,
        )
        return str(version.version)

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(mlflow_run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def end(self, mlflow_run_id: str, status: str) -> None:
        self.client.set_terminated(mlflow_run_id, _STATUS.get(status, "FAILED"))


@dataclass
class MemoryRun:
    parent: str | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[MetricPoint] = field(default_factory=list)
    datasets: list[DatasetRef] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
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

    def log_model(self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]) -> str:
        self.calls += 1
        mid = f"m-{len(self.models)}"
        self.models[mid] = {"name": name, "run": mlflow_run_id, "dir": local_dir, "tags": tags}
        self.runs[mlflow_run_id].models.append(mid)
        return mid

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        for mid, m in self.models.items():
            if m["tags"].get("cairn.artifact_digest") == model_digest:
                m.setdefault("metrics", {}).update(metrics)
                self.runs[mlflow_run_id].tags.setdefault("cairn.evaluated_model", mid)
        self.log_metrics(
            mlflow_run_id, [MetricPoint(k, float(v), 0, 0) for k, v in metrics.items()]
        )

    def register_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str:
        mid = self.log_model(mlflow_run_id, name, local_dir, tags)
        versions = self.registry.setdefault(name, [])
        versions.append({"model_id": mid, "tags": tags})
        return str(len(versions))

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].tags.update(tags)

    def end(self, mlflow_run_id: str, status: str) -> None:
        self.calls += 1
        self.runs[mlflow_run_id].status = _STATUS.get(status, "FAILED")


class TrackingError(Exception):
    """A tracker call failed in the background; raised at the next `flush`."""


class BackgroundTracker:
    """Runs another tracker's calls on one thread, in order, off the engine's critical path.

    MLflow mirrors Cairn's state rather than holding it, so a step need not wait for it: each
    call costs ~7 ms on MLflow's SQLite store, ~60 ms a step. Run ids come back at once as
    placeholders, resolved on the worker thread; `on_id(placeholder, real_id)` is called there
    as each real id arrives. `flush()` waits for everything and raises the first failure.
    """

    def __init__(self, inner: Tracker, on_id: Any = None) -> None:
        import queue
        import threading

        self.inner = inner
        self.on_id = on_id
        self._ids: dict[str, str] = {}
        self._errors: list[str] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="cairn-tracker", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                fn()
            except Exception as e:  # kept, and raised by flush(): never lost
                self._errors.append(f"{type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    def _new_id(self, make: Any) -> str:
        placeholder = f"pending:{uuid.uuid4().hex}"

        def create() -> None:
            real = make()
            self._ids[placeholder] = real
            if self.on_id:
                self.on_id(placeholder, real)

        self._queue.put(create)
        return placeholder

    def real_id(self, rid: str) -> str:
        return self._ids[rid] if rid.startswith("pending:") else rid

    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id(lambda: self.inner.start_run(run_id, workflow, params, tags))

    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id(
            lambda: self.inner.start_step(self.real_id(parent), run_id, step, params, tags)
        )

    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        self._queue.put(lambda: self.inner.log_metrics(self.real_id(mlflow_run_id), list(points)))

    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None:
        self._queue.put(lambda: self.inner.log_datasets(self.real_id(mlflow_run_id), datasets))

    def log_model(self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]) -> str:
        return self._new_id(
            lambda: self.inner.log_model(self.real_id(mlflow_run_id), name, local_dir, tags)
        )

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        self._queue.put(
            lambda: self.inner.log_model_metrics(
                self.real_id(mlflow_run_id), model_digest, dict(metrics)
            )
        )

    def register_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str:
        return self._new_id(
            lambda: self.inner.register_model(self.real_id(mlflow_run_id), name, local_dir, tags)
        )

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self._queue.put(lambda: self.inner.set_tags(self.real_id(mlflow_run_id), tags))

    def end(self, mlflow_run_id: str, status: str) -> None:
        self._queue.put(lambda: self.inner.end(self.real_id(mlflow_run_id), status))

    def flush(self) -> None:
        self._queue.join()
        if self._errors:
            errors, self._errors = self._errors, []
            raise TrackingError(
                f"{len(errors)} tracking call(s) failed; first: {errors[0]}. Check "
                "MLFLOW_TRACKING_URI (the run's own state in Cairn's database is complete)"
            )
