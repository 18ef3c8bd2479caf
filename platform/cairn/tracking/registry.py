"""The released model in MLflow: logged with its files as an MLflow transformers model, so that
`mlflow.transformers.load_model("models:/NAME/VERSION")` (and `mlflow.pyfunc`) load it, and
registered as a version that *is* that LoggedModel, with the scores of the model it releases.

Only the release's model is logged with files: every other model stays in Cairn's store and is
a LoggedModel without files (`MlflowTracker.log_model`). The tracker calls these functions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-global tracking URI set to `uri` for the block, then put back as it was,
    MLFLOW_TRACKING_URI included. Some MLflow calls resolve the global URI, not their client's
    (`Model.log`, the registry's "models:/" sources, `load_model`); MLflow's own
    `_use_tracking_uri` would unset MLFLOW_TRACKING_URI on the way out where no global URI was
    set, and Cairn's settings read it."""
    from mlflow.tracking._tracking_service import utils

    env, before = os.environ.get("MLFLOW_TRACKING_URI"), utils._tracking_uri
    utils.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils.set_tracking_uri(before)  # type: ignore[arg-type]  # None: unset, as it was
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def log_transformers(
    client: Any,
    tracking_uri: str,
    experiment_id: str,
    mlflow_run_id: str,
    name: str,
    local_dir: str,
    tags: dict[str, str],
    params: dict[str, str],
) -> str:
    """`local_dir` (a Hugging Face model folder) as a READY LoggedModel of `mlflow_run_id` in
    MLflow's transformers flavor ("text-generation"); returns its id."""
    import mlflow
    from mlflow.entities import LoggedModelOutput

    model = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=mlflow_run_id,
        tags=tags,
        params=params,
        model_type="cairn-release",
    )
    try:
        # Model.log resolves MLflow's global tracking URI, not a client's. A path, not a
        # loaded pipeline: MLflow copies the files without loading the model. Requirements
        # given, or MLflow would load the model in a subprocess to infer them. No run_id: Model.log
        # would tie every metric the run logged at step 0 (compute/*) to the model.
        with global_tracking_uri(tracking_uri):
            mlflow.transformers.log_model(
                local_dir,
                name=name,
                task="text-generation",
                model_id=model.model_id,
                pip_requirements=[
                    f"{p}=={version(p)}" for p in ("mlflow", "transformers", "torch")
                ],
            )
    except Exception:
        client.finalize_logged_model(model.model_id, "FAILED")
        raise
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(mlflow_run_id, [LoggedModelOutput(model.model_id, step=0)])
    return str(model.model_id)


def copy_scores(client: Any, mlflow_run_id: str, released: str, model_id: str) -> None:
    """The scores tied to LoggedModel `released` (evaluate's), tied to `model_id` too; logged
    on the release run, since a metric tied to a model belongs to some run."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    scores = client.get_logged_model(released).metrics or []
    batch = [Metric(m.key, m.value, ts, 0, model_id=model_id) for m in scores]
    if batch:
        client.log_batch(mlflow_run_id, metrics=batch, synchronous=True)


def new_version(
    client: Any,
    tracking_uri: str,
    name: str,
    model_id: str,
    tags: dict[str, str],
    description: str,
) -> str:
    """A new version of registered model `name` (created if new) that is LoggedModel
    `model_id`, described; returns the version number."""
    import mlflow

    # mlflow.register_model, not the client's create_model_version: it also tags the LoggedModel
    # with its versions (`mlflow.modelVersions`), which the UI reads to show the model as
    # registered. Source "models:/<id>" links the version to the LoggedModel in the UI (MLflow's
    # SQL registry does not keep ModelVersion.model_id: the id is in a tag too). Both resolve
    # the process-global tracking URI, hence the context.
    with global_tracking_uri(tracking_uri):
        created = mlflow.register_model(
            f"models:/{model_id}", name, tags={**tags, "cairn.logged_model_id": model_id}
        )
    client.set_registered_model_tag(name, "cairn.release", name)
    client.update_model_version(name, created.version, description=description)
    return str(created.version)
