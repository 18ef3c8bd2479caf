"""A run whose steps are all cache hits hands its MLflow calls to a process of its own instead of
loading MLflow (`cairn.engine.handoff`); here that process is stood in for by replaying the
handed calls on an in-memory tracker, which must end with what mirroring in-process gives, and
with the real ids in Cairn's database. A run that executes a step mirrors as it goes."""

from __future__ import annotations

from sqlalchemy import select

import tests.unit.engine.toy_stages  # noqa: F401  (registers toy_count and toy_fit)
from cairn.db.models import Event, Run, StepRun
from cairn.engine import handoff
from cairn.engine.recorder import store_mlflow_id
from cairn.testing import MemoryTracker
from cairn.tracking.background import BackgroundTracker
from cairn.workflow import load_workflow
from tests.unit.engine.test_engine import make_engine, states, write_wf


def mlflow_ids(engine, run_id: str) -> dict[str, str | None]:
    with engine.sessions() as s:
        ids = {
            r.step: r.mlflow_run_id
            for r in s.scalars(select(StepRun).where(StepRun.run_id == run_id))
        }
        ids["run"] = s.get(Run, run_id).mlflow_run_id
    return ids


def test_an_all_cached_run_hands_its_mirror_over(home, monkeypatch):
    handed = []
    monkeypatch.setattr(
        handoff, "start", lambda settings, run_id, calls: handed.append((run_id, calls)) or 4242
    )
    tracker = MemoryTracker()
    engine = make_engine(home, tracker)
    first = engine.run(load_workflow(write_wf(home)))
    assert engine.tracker.started and handed == []  # steps executed: mirrored as they ran
    runs_before = len(tracker.runs)

    # A fresh engine, as a new `cairn run` is; its tracker as the engine builds MLflow's.
    engine = make_engine(home, tracker)
    engine.tracker.portable = True
    again = engine.run(load_workflow(write_wf(home)))
    assert states(again) == {"count": "cached", "fit": "cached"}
    assert not engine.tracker.started and len(tracker.runs) == runs_before  # MLflow untouched
    [(run_id, calls)] = handed
    assert run_id == again.run_id
    with engine.sessions() as s:
        [event] = s.scalars(
            select(Event).where(Event.run_id == run_id, Event.type == "mirror_handed_off")
        ).all()
    assert event.data == {"pid": 4242, "calls": len(calls)}
    assert all(i and i.startswith("pending:") for i in mlflow_ids(engine, run_id).values())

    # The process it was handed to: the same calls on a tracker of its own.
    replayer = BackgroundTracker(
        lambda: tracker, on_id=lambda p, r: store_mlflow_id(engine.sessions, p, r)
    )
    replayer.replay(calls)
    replayer.flush()
    ids = mlflow_ids(engine, run_id)
    assert all(i in tracker.runs for i in ids.values()), ids
    fit = tracker.runs[ids["fit"]]
    assert fit.parent == ids["run"] and fit.status == "FINISHED"
    assert fit.tags["cairn.state"] == "cached"
    assert fit.tags["cairn.artifact_digest"] == first.steps["fit"].artifacts["model"].digest
    assert tracker.runs[ids["run"]].tags["cairn.state"] == "succeeded"


def test_a_tracker_that_cannot_be_rebuilt_elsewhere_mirrors_in_process(home, monkeypatch):
    monkeypatch.setattr(handoff, "start", lambda *a: (_ for _ in ()).throw(AssertionError))
    tracker = MemoryTracker()
    make_engine(home, tracker).run(load_workflow(write_wf(home)))
    engine = make_engine(home, tracker)  # an in-memory tracker: not portable
    again = engine.run(load_workflow(write_wf(home)))
    ids = mlflow_ids(engine, again.run_id)
    assert tracker.runs[ids["count"]].tags["cairn.state"] == "cached"
    assert tracker.runs[ids["run"]].status == "FINISHED"
