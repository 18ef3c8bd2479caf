"""Autoscaling from the workflow, on Ray's fake multi-node autoscaler: a cluster that starts with
only its head scales up to run a 2-worker training step and back down after it, and the run's
events show both; a step that no node type can ever hold fails at once, naming the fix.

The workflow runs in a process of its own (`scale_driver.py`) connected to the fake cluster, as
`cairn run` with RAY_ADDRESS would; this process keeps the session's local Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from cairn.db.models import Event, StepRun
from tests import REPO

from .conftest import Trail, tiny
from .fake_cluster import LocalAutoscalingCluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# The trail's curate step (a cache hit in its home), then a training step that only fake nodes
# can hold: only they carry accelerator_type:fake, so both workers need new nodes.
MODEL = """
  model:
    kind: pretrain
    inputs: {{dataset: corpus.dataset}}
    config:
      hidden_size: 64
      num_layers: 1
      num_heads: 1
      intermediate_size: 128
      max_steps: {steps}
      global_batch_size: 4
      warmup_steps: 2
      checkpoint_every: 6
      eval_every: 6
      eval_batches: 1
      log_every: 2
    resources: {{num_workers: {workers}, cpus_per_worker: 1, accelerator_type: fake}}
  settled:
    kind: wait_for_scale_down
    inputs: {{model: model.model}}
    config: {{nodes: 1}}
"""


def workflow(workers: int, steps: int) -> str:
    curate = tiny("scale").split("  model:")[0]
    return curate + MODEL.format(workers=workers, steps=steps).lstrip("\n")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalAutoscalingCluster(
        tmp_path_factory.mktemp("fake-cluster"),
        head_resources={"CPU": 1},
        worker_node_types={
            "cpu.fake": {
                "resources": {"CPU": 1, "accelerator_type:fake": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            }
        },
        idle_timeout_minutes=0.1,
    )
    c.start(override_env={"PYTHONPATH": str(REPO)})
    yield c
    c.shutdown()


def _run(
    cluster, trail: Trail, workers: int, steps: int = 12
) -> tuple[dict, list[Event], list[StepRun]]:
    wf = trail.workflow(f"scale-{workers}.yaml", workflow(workers, steps))
    # The cluster's own variables last (its auth mode, its PYTHONPATH), the trail's home first.
    env = {
        **trail.env(),
        **cluster.env,
        "CAIRN_HOME": str(trail.home),
        "RAY_ADDRESS": cluster.address,
    }
    out = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "scale_driver.py"), str(wf)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    db = create_engine(f"sqlite:///{trail.home / 'cairn.db'}")
    with Session(db) as s:
        events = list(s.scalars(select(Event).where(Event.run_id == result["run_id"])))
        runs = list(s.scalars(select(StepRun).where(StepRun.run_id == result["run_id"])))
        s.expunge_all()
    db.dispose()
    return result, events, runs


def test_scales_up_for_a_two_worker_step_and_down_after(trail, cluster):
    assert cluster.alive_nodes() == 1  # the head only
    result, events, runs = _run(cluster, trail, workers=2)
    assert result["state"] == "succeeded"
    assert {r.step: r.state for r in runs}["corpus"] == "cached"  # the trail's dataset
    kinds = [e.type for e in events]
    story = "\n".join(f"{e.type}: {e.message}" for e in events)
    begin = next(
        i
        for i, e in enumerate(events)
        if e.type == "step_started" and e.step_run_id and "model:" in e.message
    )
    end = next(
        i for i, e in enumerate(events) if e.type == "step_succeeded" and "model:" in e.message
    )
    # Up while the training step ran, down only after it had finished.
    assert kinds[begin:end].count("node_added") >= 2, story
    assert kinds[end:].count("node_removed") >= 2, story
    assert "node_removed" not in kinds[begin:end], story
    started = next(e for e in events if e.type == "workers_started")
    assert len(started.data["workers"]) == 2
    assert len({w["node"] for w in started.data["workers"]}) == 2  # one fake node each
    model_start = next(e for e in events if e.type == "step_started" and "model" in e.message)
    assert "2 × {CPU 1, accelerator_type:fake}" in model_start.message
    model = next(r for r in runs if r.step == "model")
    assert model.usage["worker_seconds"] > 0 and len(model.usage["workers"]) == 3
    assert cluster.alive_nodes() == 1


def test_a_step_no_node_type_can_hold_fails_at_once(trail, cluster):
    t0 = time.monotonic()
    # 10 steps, not 12: a different fingerprint, so the step is not the first test's cache hit.
    result, events, runs = _run(cluster, trail, workers=3, steps=10)
    assert result["state"] == "failed"
    model = next(r for r in runs if r.step == "model")
    assert model.state == "failed" and model.mlflow_run_id is None
    assert "needs 3 worker(s)" in model.error and "at most 2 fit" in model.error
    assert "fix: set resources.num_workers to at most 2" in model.error
    assert "cpu.fake ×2" in model.error
    assert not [e for e in events if e.type == "node_added"]  # nothing was asked of the cluster
    assert time.monotonic() - t0 < 120
