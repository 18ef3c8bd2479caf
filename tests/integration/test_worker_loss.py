"""Training at cluster scale, on the session's local Ray: a training worker SIGKILLed mid-run is
replaced and training resumes from the last checkpoint, the events show the failure and the
restart, and the final weights equal an uninterrupted run's bit for bit; an elastic step that
cannot get its maximum starts with fewer workers and finishes with the same weights as a fixed
group of that size.

The uninterrupted references run the same stage code (`pretrain.driver.train`) on the dataset
the workflow curated, with the same config and resources.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import select

from cairn.db.models import Event
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.stage import ArtifactType, InputArtifact, Resources
from cairn.stages.curate import pack
from cairn.stages.pretrain import PretrainConfig
from cairn.stages.pretrain.data import BatchOrder
from cairn.stages.pretrain.driver import train
from cairn.testing import local_context
from cairn.workflow import load_workflow

from .conftest import write_tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _reference(result, engine: Engine, root: Path, workflow: Path, workers: int) -> Path:
    """The same pretrain step, uninterrupted, outside the engine: its model directory."""
    wf = load_workflow(workflow)
    step = wf.steps["model"]
    data = result.steps["corpus"].artifacts["dataset"]
    dataset = InputArtifact(
        path=engine.store.local_path(data.uri, data.digest),
        type=ArtifactType.DATASET,
        digest=data.digest,
    )
    ctx = local_context(root, resources=Resources(num_workers=workers, cpus_per_worker=1))
    config = PretrainConfig.model_validate(step.config.model_dump())
    train(config, {"dataset": dataset}, ctx)
    return ctx.outputs_root / "model"


def _events(engine: Engine, run_id: str | None = None, kind: str | None = None) -> list[Event]:
    with engine.sessions() as s:
        q = select(Event).order_by(Event.id)
        if run_id:
            q = q.where(Event.run_id == run_id)
        if kind:
            q = q.where(Event.type == kind)
        rows = list(s.scalars(q))
        s.expunge_all()
        return rows


@pytest.fixture(scope="module")
def home(ray_local, tmp_path_factory):
    """One CAIRN_HOME for the module: the second run's curate step is a cache hit."""
    root = tmp_path_factory.mktemp("worker-loss")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "RAY_ADDRESS"):
            mp.delenv(var, raising=False)
        mp.setenv("CAIRN_HOME", str(root / "home"))
        yield root


def test_a_sigkilled_worker_is_replaced_and_the_weights_match(home, tmp_path):
    cairn_home = home / "home"
    workflow = write_tiny(home / "wf", max_steps=160, checkpoint_every=20)
    # Validation only at the end: the test is about the training loop, not evaluation.
    workflow.write_text(workflow.read_text().replace("eval_every: 4", "eval_every: 160"))
    engine = Engine(Settings.from_env())
    killed: dict[str, int] = {}

    def kill_rank_1_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            # Once step 40's checkpoint is being written, step 20's is surely registered (each
            # report is a barrier): the restarted group must resume from one of them.
            if list(cairn_home.glob("checkpoints/model-*/train/step-00000040")):
                started = _events(engine, kind="workers_started")
                if started:
                    pid = started[-1].data["workers"][1]["pid"]
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_rank_1_after_the_first_checkpoint, daemon=True)
    killer.start()
    result = engine.run(load_workflow(workflow))
    killer.join(timeout=5)
    assert killed, "training finished before a checkpoint appeared: nothing was killed"
    assert result.state == "succeeded", result.error

    events = _events(engine, result.run_id)
    kinds = [e.type for e in events]
    failed = next(e for e in events if e.type == "worker_failed")
    assert "restarting from the latest checkpoint (restart 1 of 2)" in failed.message
    assert kinds.count("workers_started") == 2
    assert kinds.index("workers_started") < kinds.index("worker_failed")
    second = [e for e in events if e.type == "workers_started"][1]
    assert killed["pid"] not in [w["pid"] for w in second.data["workers"]]
    logs = (cairn_home / "logs" / result.run_id / "model.log").read_text()
    assert "pretrain: resumed from step 20" in logs or "pretrain: resumed from step 40" in logs

    model = engine.store.local_path(
        result.steps["model"].artifacts["model"].uri,
        result.steps["model"].artifacts["model"].digest,
    )
    _same_weights(model, _reference(result, engine, tmp_path / "ref", workflow, workers=2))


@pytest.fixture(scope="module")
def elastic_run(home):
    """A 2..3-worker pretrain step on the session's 2-CPU Ray: it starts (and stays) at 2."""
    workflow = write_tiny(home / "elastic", max_steps=12, checkpoint_every=6)
    text = workflow.read_text().replace("global_batch_size: 4", "global_batch_size: 6")
    workflow.write_text(text.replace("num_workers: 2,", "num_workers: '2..3',"))
    engine = Engine(Settings.from_env())
    result = engine.run(load_workflow(workflow))
    return engine, result, workflow, home


def test_an_elastic_step_starts_with_fewer_workers_and_finishes(elastic_run, tmp_path):
    engine, result, workflow, _ = elastic_run
    assert result.state == "succeeded", result.error
    events = _events(engine, result.run_id)
    start = next(e for e in events if e.type == "step_started" and "model:" in e.message)
    assert "2..3 × {CPU 1} (Ray Train workers)" in start.message
    groups = [e for e in events if e.type == "workers_started"]
    assert [len(g.data["workers"]) for g in groups] == [2]
    _same_weights(_model_dir(engine, result), _reference(result, engine, tmp_path, workflow, 2))


def _model_dir(engine: Engine, result) -> Path:
    art = result.steps["model"].artifacts["model"]
    return engine.store.local_path(art.uri, art.digest)


def test_data_order_answers_for_a_document_of_the_run(elastic_run):
    engine, result, _, root = elastic_run
    model = _model_dir(engine, result)
    data = result.steps["corpus"].artifacts["dataset"]
    dataset = engine.store.local_path(data.uri, data.digest)
    meta = json.loads((dataset / "dataset.json").read_text())
    docs = [json.loads(x) for x in (dataset / "documents.jsonl").read_text().splitlines()]
    # Step 1's batch, computed as the loop computes it, and its first sequence's first token
    # traced back to its document by curate's own function.
    first = BatchOrder(meta["train_sequences"], 6, 0).global_batch_at(0)
    doc = docs[pack.trace(dataset / "train", int(first[0]), 0, meta["seq_len"])]
    held_out = next(d for d in docs if d["split"] == "validation")
    env = {**os.environ, "CAIRN_HOME": str(root / "home")}
    cairn = str(Path(sys.executable).parent / "cairn")

    def ask(*args: str) -> dict:
        out = subprocess.run(
            [cairn, "data-order", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    seen = ask(str(model), "--doc", doc["id"])
    assert seen["seen"] and seen["first_step"] == 1 and int(first[0]) in seen["sequences"]
    assert ask(str(model), "--doc", held_out["id"])["seen"] is False
    at_6 = model / "checkpoints" / "step-0000006"
    assert ask(str(at_6))["steps_recorded"] == 6
    assert ask(str(at_6), "--doc", doc["id"], "--before", "1")["steps"] == [1]
    # A model digest works as well as a directory; asking past the record says what to do.
    digest = result.steps["model"].artifacts["model"].digest
    assert ask(digest[:16], "--doc", doc["id"])["first_step"] == 1
    late = subprocess.run(
        [cairn, "data-order", str(at_6), "--doc", doc["id"], "--before", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join((late.stdout + late.stderr).split())  # the console wraps long lines
    assert late.returncode != 0 and "use a checkpoint at or after it" in said
