"""Training at cluster scale, on the session's local Ray: a training worker SIGKILLed mid-run is
replaced and training resumes from the last checkpoint, the events show the failure and the
restart, and the final weights equal an uninterrupted run's bit for bit; an elastic step that
cannot get its maximum starts with fewer workers and finishes with the same weights as a fixed
group of that size.

The uninterrupted reference is the session trail's model (conftest): both runs here train the
trail's pretrain config on its cached dataset, under step names of their own and `cache: false`,
so they train afresh (in checkpoint directories of their own) and must end at its weights.
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
from cairn.stages.curate import pack
from cairn.stages.pretrain.data import BatchOrder
from cairn.workflow import load_workflow

from .conftest import TRAIL_MODEL, Trail, tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


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


def _trail_model(trail: Trail) -> Path:
    return Path(trail.result.steps["model"].artifacts["model"].uri)


def test_a_sigkilled_worker_is_replaced_and_the_weights_match(trail: Trail):
    workflow = trail.workflow(
        "killed.yaml", tiny("killed", model="killed", cache=False, **TRAIL_MODEL)
    )
    engine = trail.engine()
    killed: dict[str, int] = {}

    def kill_rank_1_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            # Once step 20's checkpoint is being written, step 10's is surely registered (each
            # report is a barrier): the restarted group must resume from one of them.
            if list(trail.home.glob("checkpoints/killed-*/train/step-00000020")):
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
    assert killed, "training finished before the checkpoint appeared: nothing was killed"
    assert result.state == "succeeded", result.error

    events = _events(engine, result.run_id)
    kinds = [e.type for e in events]
    failed = next(e for e in events if e.type == "worker_failed")
    assert "restarting from the latest checkpoint (restart 1 of 2)" in failed.message
    assert kinds.count("workers_started") == 2
    assert kinds.index("workers_started") < kinds.index("worker_failed")
    second = [e for e in events if e.type == "workers_started"][1]
    assert killed["pid"] not in [w["pid"] for w in second.data["workers"]]
    logs = (trail.home / "logs" / result.run_id / "killed.log").read_text()
    assert "pretrain: resumed from step 10" in logs or "pretrain: resumed from step 20" in logs
    assert result.steps["killed"].fingerprint == trail.result.steps["model"].fingerprint
    _same_weights(_model_dir(engine, result, "killed"), _trail_model(trail))


@pytest.fixture(scope="module")
def elastic_run(trail: Trail):
    """A 2..3-worker pretrain step on the session's 2-CPU Ray: it starts (and stays) at 2."""
    text = tiny("elastic", model="elastic", workers="2..3", cache=False, **TRAIL_MODEL)
    engine = trail.engine()
    result = engine.run(load_workflow(trail.workflow("elastic.yaml", text)))
    return engine, result


def test_an_elastic_step_starts_with_fewer_workers_and_finishes(elastic_run, trail: Trail):
    engine, result = elastic_run
    assert result.state == "succeeded", result.error
    events = _events(engine, result.run_id)
    start = next(e for e in events if e.type == "step_started" and "elastic:" in e.message)
    assert "2..3 × {CPU 1} (Ray Train workers)" in start.message
    groups = [e for e in events if e.type == "workers_started"]
    assert [len(g.data["workers"]) for g in groups] == [2]
    # The same weights as the trail's fixed group of 2 (resources are not identity either).
    assert result.steps["elastic"].fingerprint == trail.result.steps["model"].fingerprint
    _same_weights(_model_dir(engine, result, "elastic"), _trail_model(trail))


def _model_dir(engine: Engine, result, step: str) -> Path:
    art = result.steps[step].artifacts["model"]
    return engine.store.local_path(art.uri, art.digest)


def test_data_order_answers_for_a_document_of_the_run(elastic_run, trail: Trail):
    engine, result = elastic_run
    model = _model_dir(engine, result, "elastic")
    data = result.steps["corpus"].artifacts["dataset"]
    dataset = engine.store.local_path(data.uri, data.digest)
    meta = json.loads((dataset / "dataset.json").read_text())
    docs = [json.loads(x) for x in (dataset / "documents.jsonl").read_text().splitlines()]
    # Step 1's batch, computed as the loop computes it, and its first sequence's first token
    # traced back to its document by curate's own function.
    first = BatchOrder(meta["train_sequences"], 6, 0).global_batch_at(0)
    doc = docs[pack.trace(dataset / "train", int(first[0]), 0, meta["seq_len"])]
    held_out = next(d for d in docs if d["split"] == "validation")
    env = trail.env()
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
    at_10 = model / "checkpoints" / "step-0000010"
    assert ask(str(at_10))["steps_recorded"] == 10
    assert ask(str(at_10), "--doc", doc["id"], "--before", "1")["steps"] == [1]
    # A model digest works as well as a directory; asking past the record says what to do.
    digest = result.steps["elastic"].artifacts["model"].digest
    assert ask(digest[:16], "--doc", doc["id"])["first_step"] == 1
    late = subprocess.run(
        [cairn, "data-order", str(at_10), "--doc", doc["id"], "--before", "15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = " ".join((late.stdout + late.stderr).split())  # the console wraps long lines
    assert late.returncode != 0 and "use a checkpoint at or after it" in said
