"""A failure reaches the user as Cairn's message, recorded the same everywhere; the traceback goes
to the step's log file. Nothing is left half-done: no artifact, no MLflow run left RUNNING."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cairn.db.models import ArtifactRow, Run, StepRun
from cairn.engine.backends.ray import own_error
from cairn.errors import StageError
from cairn.testing import MemoryTracker
from cairn.workflow import load_workflow
from tests.unit.engine.test_engine import make_engine, states, write_wf


def step_rows(engine, run_id):
    with engine.sessions() as s:
        rows = s.scalars(select(StepRun).where(StepRun.run_id == run_id)).all()
        return {r.step: (r.state, r.error) for r in rows}


def test_a_stage_error_is_recorded_as_its_own_message(home):
    tracker = MemoryTracker()
    engine = make_engine(home, tracker)
    fit = f"{{fail_times: 9, counter: '{home / 'counter'}'}}"
    r = engine.run(load_workflow(write_wf(home, fit=fit)))
    assert r.steps["fit"].error == "planned failure 1"  # not "StageError: …", no traceback
    assert step_rows(engine, r.run_id)["fit"] == ("failed", "planned failure 1")
    fit_run = next(m for m in tracker.runs.values() if m.tags.get("cairn.step") == "fit")
    assert fit_run.tags["cairn.error"] == "planned failure 1"
    assert fit_run.status == "FAILED"
    log = (engine.settings.home / "logs" / r.run_id / "fit.log").read_text()
    assert "Traceback" in log and "planned failure 1" in log


def test_a_bug_names_its_type_and_where_its_traceback_is(home):
    engine = make_engine(home)
    r = engine.run(load_workflow(write_wf(home, fit="{bug: true}")))
    err = r.steps["fit"].error
    log = engine.settings.home / "logs" / r.run_id / "fit.log"
    assert err == f"ZeroDivisionError: division by zero (traceback in {log})"
    assert "Traceback" not in err
    assert "1 / 0" in log.read_text()  # the source line, for whoever debugs it


def test_an_unreadable_source_fails_its_step_and_the_run_records_it(home):
    """The source folder exists at validation and is emptied before the run: the step is
    `failed` (not `cancelled`), downstream is skipped, the run has an id and nothing RUNNING."""
    tracker = MemoryTracker()
    engine = make_engine(home, tracker)
    wf = load_workflow(write_wf(home))
    (home / "wf" / "data" / "a.txt").unlink()
    r = engine.run(wf)
    assert r.run_id and r.state == "failed"
    assert states(r) == {"count": "failed", "fit": "cancelled"}
    err = r.steps["count"].error
    assert err.startswith(f"{home / 'wf' / 'toy.yaml'}:4: steps.count.inputs.sources: './data': ")
    assert "holds no files; fix: point the input at the data files" in err
    assert step_rows(engine, r.run_id)["count"] == ("failed", err)
    with engine.sessions() as s:
        run = s.get_one(Run, r.run_id)
        assert run.state == "failed" and err in run.error
        assert s.scalars(select(ArtifactRow)).all() == []
    assert {m.status for m in tracker.runs.values()} == {"FAILED"}


def ray_task_error(cause, wrapped_times=1):
    from ray.exceptions import RayTaskError

    err = cause
    for _ in range(wrapped_times):
        err = RayTaskError("execute_step", "Traceback …\n" + repr(err), err).as_instanceof_cause()
    return err


@pytest.mark.parametrize("times", [1, 2, 3])
def test_own_error_finds_the_stage_error_under_rays_wrappers(times):
    stage = StageError("x.jsonl:3: not valid JSON; fix the line")
    found = own_error(ray_task_error(stage, times))
    assert found is stage and str(found) == "x.jsonl:3: not valid JSON; fix the line"


def test_own_error_of_a_bug_is_the_bug_itself():
    bug = KeyError("text")
    assert own_error(ray_task_error(bug, 2)) is bug


def test_own_error_follows_explicit_chaining():
    """A stage that wraps a library error keeps Cairn's message on top."""
    try:
        try:
            raise ValueError("inner")
        except ValueError as e:
            raise StageError("outer message; fix: this") from e
    except StageError as e:
        stage = e
    assert own_error(ray_task_error(stage)) is stage


def test_cli_json_of_a_run_whose_source_is_empty(tmp_path):
    """`cairn run --json` on the real engine (SQLite, MLflow's SQLite store; Ray never starts:
    the step fails before it is submitted): a run id, a failed step, its message with the
    workflow line and a fix; `cairn status --json` agrees; no MLflow run left RUNNING."""
    import json

    from mlflow.tracking import MlflowClient

    from tests.unit.workflow.test_checks import cairn

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "one two three"}\n')
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: empty\nsteps:\n  corpus:\n    kind: curate\n"
        "    inputs: {sources: [./data]}\n    config: {vocab_size: 300, seq_len: 16}\n"
    )
    assert cairn(["validate", str(wf)], tmp_path, tmp_path / "home").returncode == 0
    (tmp_path / "data" / "a.jsonl").unlink()  # emptied between validation and the run
    p = cairn(["run", str(wf), "--json"], tmp_path, tmp_path / "home")
    assert p.returncode != 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["run_id"] and out["status"] == "failed"
    step = out["steps"]["corpus"]
    assert step["state"] == "failed"
    assert step["error"].startswith(f"{wf}:3: steps.corpus.inputs.sources: './data': source ")
    assert "holds no files; fix: " in step["error"]
    st = json.loads(cairn(["status", out["run_id"], "--json"], tmp_path, tmp_path / "home").stdout)
    assert [(a["state"], a["error"]) for a in st["steps"]] == [("failed", step["error"])]
    client = MlflowClient(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and "RUNNING" not in {r.info.status for r in runs}
