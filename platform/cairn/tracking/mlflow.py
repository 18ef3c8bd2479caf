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
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from cairn.firstuse import migrating
from cairn.settings import scrub, url_secrets
from cairn.tracking import (
    STATUS,
    DatasetRef,
    MetricPoint,
    TrackingError,
    digest_tags,
    flatten,
)

F = TypeVar("F", bound=Callable[..., Any])

# MLflow's dataset digest column is String(36) (and its API refuses more): the full sha256 rides
# in the source, the profile and a tag.
MLFLOW_DIGEST_LEN = 36
# The HF config.json entries a LoggedModel shows as params (what the model is, not how it ran).
HF_PARAMS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "torch_dtype",
    "dtype",
)


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
        from sqlalchemy import create_engine

        # MLflow creates or migrates a database store's schema when its client is made: one
        # process at a time (cairn.firstuse). A tracking server migrates its own.
        engine = create_engine(tracking_uri) if tracking_uri.startswith("postgresql") else None
        try:
            with migrating(tracking_uri, engine):
                self.client = MlflowClient(tracking_uri)
        finally:
            if engine is not None:
                engine.dispose()
        self._uri = tracking_uri
        self.artifact_root = artifact_root
        self._experiments: dict[str, str] = {}
        self._run_experiment: dict[str, str] = {}

    def _experiment(self, workflow: str) -> str:
        name = f"cairn/{workflow}"
        if name not in self._experiments:
            from mlflow.exceptions import MlflowException

            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    self._experiments[name] = self.client.create_experiment(
                        name, artifact_location=self._artifact_location(workflow)
                    )
                    return self._experiments[name]
                except MlflowException as e:  # another run created it since
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    exp = self.client.get_experiment_by_name(name)
                    if exp is None:
                        raise
            self._experiments[name] = exp.experiment_id
        return self._experiments[name]

    def _artifact_location(self, workflow: str) -> str | None:
        """Where an experiment's artifacts go: a tracking server's own artifact store (None: the
        server decides; a client-side folder would put every client's models on its own disk),
        else the embedded store's folder under the Cairn home."""
        if urlparse(self._uri).scheme in ("http", "https"):
            return None
        return f"{self.artifact_root}/{workflow}"

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
        """Datasets named as the workflow names them (`corpus.dataset`, `./chat/sft.jsonl`),
        their source the artifact's URI. MLflow caps a dataset digest at 36 characters
        (`MAX_DATASET_DIGEST_SIZE`, the column is String(36)), so the digest column holds
        Cairn's sha256 cut to that, and the full 64 hex are in the source, the profile and
        the `cairn.artifact_digest` input tag."""
        from mlflow.entities import DatasetInput, InputTag

        inputs = [
            DatasetInput(
                _dataset(d),
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
    def log_model_inputs(self, mlflow_run_id: str, models: list[DatasetRef]) -> None:
        """Input models as model inputs, the LoggedModel Cairn logged for each digest (so MLflow
        links model → model); a model with none (a checkpoint given by path) as a dataset."""
        from mlflow.entities import LoggedModelInput

        found = {m.digest: self._model_id(m.digest) for m in models}
        ids = list(dict.fromkeys(i for i in found.values() if i))
        if ids:
            self.client.log_inputs(mlflow_run_id, models=[LoggedModelInput(i) for i in ids])
        self.log_datasets(mlflow_run_id, [m for m in models if not found[m.digest]])

    @_scrubbed
    def log_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        """A model artifact as a LoggedModel of its run: tags, the step's config and the HF
        config's scalars as params, no files. A stage's models are in Cairn's store already
        (the `cairn.uri` tag says where); copying every intermediate model's weights into
        MLflow's artifact root would double the disk for nothing. The released model is
        the one logged with its files, loadable from MLflow (`register_model`)."""
        from mlflow.entities import LoggedModelOutput

        exp = self.client.get_run(mlflow_run_id).info.experiment_id
        model = self.client.create_logged_model(
            exp,
            name=name,
            source_run_id=mlflow_run_id,
            tags=tags,
            params=_model_params(local_dir, params),
            model_type="cairn",
        )
        self.client.finalize_logged_model(model.model_id, "READY")
        self.client.log_outputs(mlflow_run_id, [LoggedModelOutput(model.model_id, step=0)])
        return model.model_id

    def _model_id(self, digest: str) -> str | None:
        """The LoggedModel Cairn logged for model artifact `digest` in any experiment (another
        workflow in the same home may have made it), the first one logged: the one the cache
        hands on, whose scores evaluate tied to it."""
        from mlflow.entities import ViewType

        exps = [e.experiment_id for e in self.client.search_experiments(ViewType.ALL)]
        found = self.client.search_logged_models(
            experiment_ids=exps,
            filter_string=f"tags.`cairn.artifact_digest` = '{digest}'",
            order_by=[{"field_name": "creation_time", "ascending": True}],
            max_results=1,
        )
        return found[0].model_id if found else None

    @_scrubbed
    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        """Scores of a model, logged on the evaluating run *and* tied to the model's
        LoggedModel (so they show on the model's page and in `search_logged_models`). The run
        names the model as its input already (`log_model_inputs`)."""
        from mlflow.entities import Metric

        model_id = self._model_id(model_digest)
        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, 0, model_id=model_id) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(mlflow_run_id, metrics=batch[i : i + 1000], synchronous=True)

    @_scrubbed
    def register_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        """The released model, logged with `mlflow.transformers` (MLmodel, weights, tokenizer)
        as a LoggedModel of the release run, and registered as a new version of `name`: so
        `mlflow.transformers.load_model("models:/NAME/VERSION")` loads it. It carries `tags`
        (lineage digests), `params`, and the scores tied to the model it releases
        (`cairn.model_digest`'s LoggedModel, which the release run names as its input).
        Returns the version number."""
        from cairn.tracking import registry

        exp = self.client.get_run(mlflow_run_id).info.experiment_id
        model_id = registry.log_transformers(
            self.client,
            self._uri,
            exp,
            mlflow_run_id,
            name,
            local_dir,
            tags,
            _model_params(local_dir, params),
        )
        released = self._model_id(tags.get("cairn.model_digest", ""))
        if released:
            registry.copy_scores(self.client, mlflow_run_id, released, model_id)
        note = (
            f"Release `{name}` (release digest `{tags.get('cairn.release_digest', '?')}`): the "
            f"model of content digest `{tags.get('cairn.model_digest', '?')}`, with the scores "
            "tied to it. The run that logged it names that model as its input, and each model's "
            "run names the model it read, back to the data; tags `cairn.lineage.<step>` hold "
            "every ancestor's digest. `cairn audit` verifies the release bundle."
        )
        self.client.set_logged_model_tags(model_id, {"mlflow.note.content": note})
        return registry.new_version(self.client, self._uri, name, model_id, tags, note)

    @_scrubbed
    def link_cached(self, mlflow_run_id: str, fingerprint: str, digests: dict[str, str]) -> None:
        """A cache hit's run points to the run that computed its artifacts: the first step run
        of `fingerprint` that succeeded with these outputs (tag `cairn.computed_by` and a note
        with a link; `cairn.computed_by` = `unknown` if its mirror never reached MLflow)."""
        from mlflow.entities import ViewType

        exps = [e.experiment_id for e in self.client.search_experiments(ViewType.ALL)]
        runs = self.client.search_runs(
            exps,
            f"tags.`cairn.fingerprint` = '{fingerprint}' and tags.`cairn.state` = 'succeeded'",
            order_by=["attributes.start_time ASC"],
            max_results=50,
        )
        want = digest_tags(digests)
        source = next(
            (r for r in runs if all(r.data.tags.get(k) == v for k, v in want.items())), None
        )
        if source is None:
            self.set_tags(mlflow_run_id, {"cairn.computed_by": "unknown"})
            return
        i = source.info
        self.set_tags(
            mlflow_run_id,
            {
                "cairn.computed_by": i.run_id,
                "cairn.computed_by_run": source.data.tags.get("cairn.run_id", ""),
                "mlflow.note.content": (
                    f"Cache hit: the artifacts were computed by run [{i.run_name}]"
                    f"(#/experiments/{i.experiment_id}/runs/{i.run_id}) of Cairn run "
                    f"`{source.data.tags.get('cairn.run_id', '?')}`, fingerprint `{fingerprint}`."
                ),
            },
        )

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


def _dataset(d: DatasetRef) -> Any:
    """An MLflow Dataset for a Cairn artifact. Its source type says how MLflow's UI shows the
    URI: `local` for a path in the store or a local source, else the URI's scheme."""
    from mlflow.entities import Dataset

    scheme = urlparse(d.uri).scheme
    return Dataset(
        name=d.name,
        digest=d.digest[:MLFLOW_DIGEST_LEN],
        source_type="local" if scheme in ("", "file") else scheme,
        source=json.dumps({"uri": d.uri, "cairn_digest": d.digest}),
        profile=json.dumps({"cairn_digest": d.digest, "type": d.type}),
    )


def _model_params(local_dir: str, params: dict[str, Any]) -> dict[str, str]:
    """A LoggedModel's params: the producing step's config, and what the model is (its HF
    config's HF_PARAMS, as `hf.*`), where it has a config.json."""
    out = flatten(params)
    config = Path(local_dir) / "config.json"
    if config.is_file():
        hf = json.loads(config.read_text())
        out.update({f"hf.{k}": str(hf[k]) for k in HF_PARAMS if k in hf})
    return out


@functools.lru_cache(maxsize=4)
def reader(tracking_uri: str, artifact_root: str) -> MlflowTracker:
    """One tracker per store for reading (the dashboard's charts): importing MLflow and starting
    its client (which checks the store's schema) takes seconds, so it is done once, and
    `cairn server` may do it in the background before the first chart is asked for."""
    return MlflowTracker(tracking_uri, artifact_root)
