"""The core promises, on real parts: Ray, Ray Train, MLflow's SQLite store, the real stages.

One tiny curate → pretrain workflow is run several times in one Ray session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from cairn.db.models import ArtifactRow, Event
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.workflow import load_workflow

from .conftest import write_tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def states(result):
    return {n: r.state for n, r in result.steps.items()}


@pytest.fixture
def engine(cairn_home, ray_local):
    return Engine(Settings.from_env())


def test_cache_reruns_and_corruption(engine, tmp_path):
    wf_dir = tmp_path / "wf"
    first = engine.run(load_workflow(write_tiny(wf_dir)))
    assert states(first) == {"corpus": "succeeded", "model": "succeeded"}, first.error

    # the model is a Hugging Face directory that transformers loads and generates with
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_uri = first.steps["model"].artifacts["model"].uri
    model = AutoModelForCausalLM.from_pretrained(model_uri)
    tok = AutoTokenizer.from_pretrained(model_uri)
    ids = tok("Shall I compare thee", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5

    again = engine.run(load_workflow(write_tiny(wf_dir)))
    assert states(again) == {"corpus": "cached", "model": "cached"}
    assert again.steps["model"].artifacts == first.steps["model"].artifacts

    changed_model = engine.run(load_workflow(write_tiny(wf_dir, lr=0.002)))
    assert states(changed_model) == {"corpus": "cached", "model": "succeeded"}

    changed_data = engine.run(load_workflow(write_tiny(wf_dir, lr=0.002, min_words=3)))
    assert states(changed_data) == {"corpus": "succeeded", "model": "succeeded"}

    # flip one byte of the cached model's weights: detected, recomputed, recorded
    art = changed_data.steps["model"].artifacts["model"]
    weights = Path(art.uri) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    healed = engine.run(load_workflow(write_tiny(wf_dir, lr=0.002, min_words=3)))
    assert states(healed) == {"corpus": "cached", "model": "succeeded"}
    with engine.sessions() as s:
        assert s.get(ArtifactRow, art.digest).status == "corrupt"
        ev = s.scalars(
            select(Event).where(Event.type == "cache_corrupt", Event.run_id == healed.run_id)
        ).one()
        assert "model.safetensors: sha256 mismatch" in ev.message
    new = healed.steps["model"].artifacts["model"]
    assert engine.store.verify(new.uri, new.digest) == []


def test_mlflow_holds_runs_params_metrics_datasets_and_models(engine, tmp_path):
    from mlflow import MlflowClient

    result = engine.run(load_workflow(write_tiny(tmp_path / "wf")))
    assert result.state == "succeeded", result.error
    client = MlflowClient(engine.settings.mlflow_uri)
    exp = client.get_experiment_by_name("cairn/tiny")
    runs = client.search_runs([exp.experiment_id], f"tags.`cairn.run_id` = '{result.run_id}'")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = {r.data.tags["cairn.step"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parent) == 1 and set(nested) == {"corpus", "model"}
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in nested.values())
    assert parent[0].info.status == "FINISHED"

    model_run = nested["model"]
    assert model_run.data.params["hidden_size"] == "64"
    assert model_run.data.params["max_steps"] == "8"
    losses = client.get_metric_history(model_run.info.run_id, "train/loss")
    assert len(losses) >= 2 and [m.step for m in losses] == sorted(m.step for m in losses)

    dataset = result.steps["corpus"].artifacts["dataset"].digest
    inputs = model_run.inputs.dataset_inputs
    assert len(inputs) == 1
    assert json.loads(inputs[0].dataset.profile)["cairn_digest"] == dataset
    assert inputs[0].dataset.digest == dataset[:36]
    assert {t.key: t.value for t in inputs[0].tags}["cairn.artifact_digest"] == dataset
    # the raw source feeding curate is recorded with its own digest too
    src_inputs = nested["corpus"].inputs.dataset_inputs
    assert len(src_inputs) == 1 and src_inputs[0].dataset.name == "./poems"

    model_digest = result.steps["model"].artifacts["model"].digest
    assert model_run.data.tags["cairn.artifact_digest"] == model_digest
    outputs = model_run.outputs.model_outputs
    assert len(outputs) == 1
    logged = client.get_logged_model(outputs[0].model_id)
    assert logged.source_run_id == model_run.info.run_id
    assert logged.tags["cairn.artifact_digest"] == model_digest
    assert logged.status.to_proto() == 1 or str(logged.status).endswith("READY")
