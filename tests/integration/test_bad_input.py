"""Bad data at run time, through real Ray and MLflow: the user reads Cairn's message everywhere
the failure is recorded (the run result, the database, MLflow's cairn.error tag, `cairn status
--json`), the traceback is in the step's log file, and nothing is left half-written.

Two paths of a stage's error to the engine: raised in a Ray Data task inside curate (wrapped
twice by Ray) and raised in the post-training driver before its Ray Train workers start."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import select

from cairn.db.models import ArtifactRow, StepRun
from cairn.workflow import load_workflow

from .conftest import LIFECYCLE, TRAIL_MODEL, Trail, tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def failed_everywhere(trail: Trail, run_id: str, step: str, message: str) -> None:
    """`message` is how the failure reads in the database, MLflow and the CLI; the log has the
    traceback; no artifact of the step is sealed or staged; no MLflow run is left RUNNING."""
    engine = trail.engine()
    with engine.sessions() as s:
        row = s.scalars(select(StepRun).where(StepRun.run_id == run_id, StepRun.step == step)).one()
        assert (row.state, row.error) == ("failed", message)
        assert not s.scalars(select(ArtifactRow).where(ArtifactRow.step_run_id == row.id)).all()
    client = MlflowClient(engine.settings.mlflow_uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`cairn.run_id` = '{run_id}'",
    )
    assert runs and "RUNNING" not in {r.info.status for r in runs}  # cached steps: FINISHED
    (parent,) = [r for r in runs if "cairn.step" not in r.data.tags]
    (mine,) = [r for r in runs if r.data.tags.get("cairn.step") == step]
    assert parent.info.status == mine.info.status == "FAILED"
    assert mine.data.tags["cairn.error"] == message
    status = subprocess.run(
        [sys.executable, "-m", "cairn", "status", run_id, "--json"],
        env=trail.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    data = json.loads(status.stdout)
    assert [a["error"] for a in data["steps"] if a["step"] == step] == [message], data
    log = (trail.home / "logs" / run_id / f"{step}.log").read_text()
    assert "Traceback" in log and "ray::execute_step" in log
    staging = engine.settings.home / "store" / ".staging"
    assert not [p for p in staging.glob(f"{run_id}-*")], "a failed step left its staging folder"


def test_a_bad_json_line_in_curate(trail: Trail):
    bad = trail.folder / "bad-poems"
    bad.mkdir()
    text = next(p for p in sorted((trail.folder / "poems").rglob("*")) if p.is_file()).read_text()
    good = json.dumps({"text": text[:2000]})
    (bad / "a.jsonl").write_text(good + "\n" + '{"text": "unterminated\n')
    path = trail.workflow("bad-json.yaml", tiny("bad-json").replace("./poems", "./bad-poems"))
    result = trail.engine().run(load_workflow(path))
    message = result.steps["corpus"].error
    assert message.startswith(str(bad / "a.jsonl") + ":2: not valid JSON") or (
        "a.jsonl:2: not valid JSON" in message.splitlines()[0]
    ), message
    assert "Traceback" not in message and "RayTaskError" not in message and "pid=" not in message
    assert "fix" in message
    assert result.steps["model"].state == "cancelled"
    failed_everywhere(trail, result.run_id, "corpus", message)


def test_a_chat_row_without_messages_in_sft(trail: Trail):
    chat = trail.folder / "chat" / "broken.jsonl"
    rows = (trail.folder / "chat" / "sft.jsonl").read_text().splitlines()[:3]
    chat.write_text("\n".join([rows[0], json.dumps({"prompt": "no messages"}), rows[1]]) + "\n")
    text = tiny("bad-chat", **TRAIL_MODEL) + LIFECYCLE.split("  aligned:")[0].replace(
        "./chat/sft.jsonl", "./chat/broken.jsonl"
    )
    result = trail.engine().run(load_workflow(trail.workflow("bad-chat.yaml", text)))
    assert {n: s.state for n, s in result.steps.items()} == {
        "corpus": "cached",
        "model": "cached",
        "chat": "failed",
    }
    message = result.steps["chat"].error
    assert "broken.jsonl:2" in message and "fix" in message, message
    assert "Traceback" not in message and "RayTaskError" not in message
    failed_everywhere(trail, result.run_id, "chat", message)
