"""The MLflow tracker: Cairn's runs, steps, metrics, datasets and models in a real MLflow store.

MLflow quotes the tracking URI in its errors ("API request to http://user:password@host/...
failed"), and those errors reach the run's events and logs: every call here re-raises them
scrubbed of the URI's credentials.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cairn.settings import scrub, url_secrets
from cairn.tracking import STATUS, DatasetRef, MetricPoint, TrackingError, flatten

F = TypeVar("F", bound=Callable[..., Any])

# MLflow's dataset digest column is String(36): the full sha256 rides in the profile and a tag.
MLFLOW_DIGEST_LEN = 36


def _scrubbed(method: F) -> F:
    """`method`, with an error that quotes the tracking URI's credentials re-raised without
    them (and unchained: a traceback would print the original)."""

    @functools.wraps(method)
    def call(self: MlflowTracker, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as e:
            message = scrub(str(e), self._secrets)
            if message == str(e):
                raise
            raise TrackingError(f"{type(e).__name__}: {message}") from None

    return call  # type: ignore[return-value]


class MlflowTracker:
    @_scrubbed
    def __init__(self, tracking_uri: str, artifact_root: str) -> None:
        self._secrets = url_secrets(tracking_uri)  # first: _scrubbed needs them
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

    @_scrubbed
    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        exp = self._experiment(workflow)
        run = self.client.create_run(exp, run_name=run_id, tags={"cairn.run_id": run_id, **tags})
        self._run_experiment[run.info.run_id] = exp
        self._params(run.info.run_id, params)
        return run.info.run_id

    @_scrubbed
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

    @_scrubbed
    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.ts, p.step) for p in points]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(mlflow_run_id, metrics=metrics[i : i + 1000], synchronous=True)

    @_scrubbed
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

    @_scrubbed
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

    @_scrubbed
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

    @_scrubbed
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

    @_scrubbed
    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(mlflow_run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    @_scrubbed
    def end(self, mlflow_run_id: str, status: str) -> None:
        self.client.set_terminated(mlflow_run_id, STATUS.get(status, "FAILED"))

    @_scrubbed
    def history(self, mlflow_run_id: str) -> dict[str, list[tuple[int, float]]]:
        """Every metric the run logged, each as (step, value) in step order: one query for the
        keys, then one per key (MLflow has no bulk read of whole histories)."""
        keys = sorted(self.client.get_run(mlflow_run_id).data.metrics)
        out: dict[str, list[tuple[int, float]]] = {}
        for key in keys:
            points = self.client.get_metric_history(mlflow_run_id, key)
            out[key] = [
                (m.step, m.value) for m in sorted(points, key=lambda m: (m.step, m.timestamp))
            ]
        return out


@functools.lru_cache(maxsize=4)
def reader(tracking_uri: str, artifact_root: str) -> MlflowTracker:
    """One tracker per store for reading (the dashboard's charts): importing MLflow and starting
    its client (which checks the store's schema) takes seconds, so it is done once, and
    `cairn server` may do it in the background before the first chart is asked for."""
    return MlflowTracker(tracking_uri, artifact_root)
