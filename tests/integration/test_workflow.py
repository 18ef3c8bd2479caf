"""The core promises, on real parts: Ray, Ray Train, MLflow's SQLite store, the real stages.

They run in the session trail's home (conftest): the tiny curate → pretrain workflow there is all
cache hits, a changed config re-runs only what it changes, a corrupted artifact is detected,
recomputed and recorded, and MLflow holds the trail's run with its params, metrics, datasets and
models. (That a changed curate config re-runs both steps, and a changed source too, the engine's
unit tests show on the same engine with toy kinds.) The trail's whole lifecycle run again is
cache hits to the end, its serve step included (no server started), and its MLflow mirror is
written after the run by a process of its own: each hit's MLflow run names the run that computed
it, and the parent run carries the release's digest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from cairn.db.models import ArtifactRow, Event, StepRun
from cairn.workflow import load_workflow

from .conftest import TRAIL_MODEL, Trail, tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def states(result):
    return {n: r.state for n, r in result.steps.items()}


def test_cache_reruns_and_corruption(trail: Trail):
    engine = trail.engine()
    # The trail's own curate and pretrain steps, in a workflow of their own: both cached.
    same = engine.run(load_workflow(trail.workflow("cached.yaml", tiny("cached", **TRAIL_MODEL))))
    assert states(same) == {"corpus": "cached", "model": "cached"}, same.error
    assert same.steps["corpus"].artifacts == trail.result.steps["corpus"].artifacts
    assert same.steps["model"].fingerprint == trail.result.steps["model"].fingerprint

    # the model is a Hugging Face directory that transformers loads and generates with
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_uri = same.steps["model"].artifacts["model"].uri
    model = AutoModelForCausalLM.from_pretrained(model_uri)
    tok = AutoTokenizer.from_pretrained(model_uri)
    ids = tok("Shall I compare thee", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=5, do_sample=False).shape[1] == ids.shape[1] + 5

    changed = trail.workflow("changed.yaml", tiny("changed", lr=0.002, workers=1))
    changed_model = engine.run(load_workflow(changed))
    assert states(changed_model) == {"corpus": "cached", "model": "succeeded"}

    # flip one byte of that model's weights: detected, recomputed, recorded
    art = changed_model.steps["model"].artifacts["model"]
    weights = Path(art.uri) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    healed = engine.run(load_workflow(changed))
    assert states(healed) == {"corpus": "cached", "model": "succeeded"}
    new = healed.steps["model"].artifacts["model"]
    # Training is deterministic and a digest is content: the recomputed model is the same
    # artifact, whose row now records the intact copy (the corrupt one was quarantined).
    assert new.digest == art.digest
    with engine.sessions() as s:
        row = s.get(ArtifactRow, art.digest)
        assert (row.status, row.uri) == ("valid", new.uri)
        ev = s.scalars(
            select(Event).where(Event.type == "cache_corrupt", Event.run_id == healed.run_id)
        ).one()
        assert "model.safetensors: sha256 mismatch" in ev.message
    assert engine.store.verify(new.uri, new.digest) == []
    again = engine.run(load_workflow(changed))
    assert states(again) == {"corpus": "cached", "model": "cached"}
    assert again.steps["model"].artifacts["model"].digest == new.digest


def test_the_trail_again_is_all_cache_hits_and_serves_from_its_record(trail: Trail):
    from mlflow import MlflowClient

    from cairn.serving.process import pid_alive

    engine = trail.engine()
    again = engine.run(load_workflow(trail.folder / "lifecycle.yaml"))
    assert set(states(again).values()) == {"cached"}, states(again)
    endpoint = again.steps["endpoint"].artifacts["endpoint"]
    assert endpoint == trail.result.steps["endpoint"].artifacts["endpoint"]
    assert endpoint.metadata["kept"] is False
    with engine.sessions() as s:
        events = s.scalars(select(Event).where(Event.run_id == again.run_id)).all()
    assert "step_started" not in {e.type for e in events}  # nothing ran: no server either
    [hit] = [e for e in events if e.type == "cached" and e.data["step"] == "endpoint"]
    assert "no server started" in hit.data["reused"]
    assert endpoint.metadata["model_digest"][:12] in hit.data["reused"]

    # MLflow gets the hits all the same, from the process the run handed its calls to.
    [handed] = [e for e in events if e.type == "mirror_handed_off"]
    deadline = time.monotonic() + 300
    while pid_alive(handed.data["pid"]):
        assert time.monotonic() < deadline, "the MLflow mirror process did not finish"
        time.sleep(0.2)
    with engine.sessions() as s:
        ids = {
            r.step: r.mlflow_run_id
            for r in s.scalars(select(StepRun).where(StepRun.run_id == again.run_id))
        }
        events = s.scalars(select(Event).where(Event.run_id == again.run_id)).all()
    assert "tracking_failed" not in {e.type for e in events}
    assert all(i and not i.startswith("pending:") for i in ids.values()), ids
    client = MlflowClient(engine.settings.mlflow_uri)
    nested = {s: client.get_run(i) for s, i in ids.items()}
    assert {s: r.data.tags["cairn.state"] for s, r in nested.items()} == dict.fromkeys(
        ids, "cached"
    )
    assert nested["endpoint"].data.tags["cairn.artifact_digest"] == endpoint.digest
    parent = client.get_run(nested["endpoint"].data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and parent.data.tags["cairn.run_id"] == again.run_id
    # Each hit's run points to the trail's run that computed it (the first to), and the
    # parent run is described, the release's digest on it.
    with engine.sessions() as s:
        computed = {
            r.step: r.mlflow_run_id
            for r in s.scalars(
                select(StepRun).where(
                    StepRun.run_id == trail.result.run_id, StepRun.state == "succeeded"
                )
            )
        }
    assert {s: r.data.tags["cairn.computed_by"] for s, r in nested.items()} == computed
    assert "[model](#/experiments/" in nested["model"].data.tags["mlflow.note.content"]
    release = trail.result.steps["publish"].artifacts["release"].digest
    assert parent.data.tags["cairn.release_digest"] == release
    assert release in parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["mlflow.note.content"].startswith("Cairn workflow `trail`")


def test_mlflow_holds_runs_params_metrics_datasets_and_models(trail: Trail):
    from mlflow import MlflowClient

    result = trail.result
    client = MlflowClient(trail.engine().settings.mlflow_uri)
    exp = client.get_experiment_by_name("cairn/trail")
    runs = client.search_runs([exp.experiment_id], f"tags.`cairn.run_id` = '{result.run_id}'")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = {r.data.tags["cairn.step"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parent) == 1 and {"corpus", "model"} <= set(nested)
    assert all(r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in nested.values())
    assert parent[0].info.status == "FINISHED"

    model_run = nested["model"]
    assert model_run.data.params["hidden_size"] == "64"
    assert model_run.data.params["max_steps"] == str(TRAIL_MODEL["max_steps"])
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
    assert sorted(d.dataset.name for d in src_inputs) == ["./evals", "./poems"]

    model_digest = result.steps["model"].artifacts["model"].digest
    assert model_run.data.tags["cairn.artifact_digest"] == model_digest
    outputs = model_run.outputs.model_outputs
    assert len(outputs) == 1
    logged = client.get_logged_model(outputs[0].model_id)
    assert logged.source_run_id == model_run.info.run_id
    assert logged.tags["cairn.artifact_digest"] == model_digest
    assert logged.status.to_proto() == 1 or str(logged.status).endswith("READY")
