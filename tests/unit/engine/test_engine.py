"""Engine behaviour on the shipped fakes (inline executor, in-memory tracker) and real SQLite."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

import tests.unit.engine.toy_stages  # noqa: F401  (registers toy_count and toy_fit)
from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, utcnow
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow

WF = """
name: toy
steps:
  count:
    kind: toy_count
    inputs: {{sources: [./data]}}
    config: {{factor: {factor}}}
  fit:
    kind: toy_fit
    inputs: {{dataset: count.dataset}}
    config: {fit}
    retries: {retries}
    cache: {cache}
"""


def write_wf(home: Path, factor=1, fit="{width: 4}", retries=0, cache="true") -> Path:
    p = home / "wf" / "toy.yaml"
    p.write_text(WF.format(factor=factor, fit=fit, retries=retries, cache=cache))
    return p


def make_engine(home: Path, tracker=None) -> Engine:
    settings = Settings.from_env(home / "cairn")
    return Engine(settings, executor=InlineExecutor(), tracker=tracker or MemoryTracker())


def states(result):
    return {n: r.state for n, r in result.steps.items()}


def test_run_records_state_lineage_and_tracking(home):
    tracker = MemoryTracker()
    engine = make_engine(home, tracker)
    result = engine.run(load_workflow(write_wf(home)))
    assert result.state == "succeeded"
    assert states(result) == {"count": "succeeded", "fit": "succeeded"}
    with engine.sessions() as s:
        assert s.get(Run, result.run_id).state == "succeeded"
        model = result.steps["fit"].artifacts["model"].digest
        dataset = result.steps["count"].artifacts["dataset"].digest
        edges = s.scalars(select(LineageEdge)).all()
        assert {(e.parent_digest, e.child_digest) for e in edges} >= {(dataset, model)}
        # the raw source is a root: an artifact with no producer, parent of the dataset
        src = [e for e in edges if e.child_digest == dataset][0].parent_digest
        assert s.get(ArtifactRow, src).step_run_id is None
        types = [e.type for e in s.scalars(select(Event).order_by(Event.id))]
        assert types[:2] == ["run_created", "run_started"] and types[-1] == "run_finished"
    # artifacts are sealed and verify
    assert engine.store.verify(result.steps["fit"].artifacts["model"].uri, model) == []
    # tracker: a parent, two nested runs, dataset inputs with Cairn's digests, the logged model
    parents = [r for r in tracker.runs.values() if r.parent is None]
    nested = [r for r in tracker.runs.values() if r.parent is not None]
    assert len(parents) == 1 and len(nested) == 2
    fit = next(r for r in nested if r.tags["cairn.step"] == "fit")
    assert fit.params["width"] == "4"
    assert [d.digest for d in fit.datasets] == [dataset]
    assert [p.value for p in fit.metrics if p.key == "loss"] == [1.0, 0.5, 1 / 3]
    assert fit.tags["cairn.artifact_digest"] == model
    assert tracker.models[fit.models[0]]["tags"]["cairn.artifact_digest"] == model
    assert all(r.status == "FINISHED" for r in tracker.runs.values())


def test_second_run_is_all_cached(home):
    engine = make_engine(home)
    first = engine.run(load_workflow(write_wf(home)))
    second = engine.run(load_workflow(write_wf(home)))
    assert states(second) == {"count": "cached", "fit": "cached"}
    assert second.steps["fit"].artifacts == first.steps["fit"].artifacts


def test_a_runtime_field_does_not_change_the_fingerprint_but_an_identity_field_does(home):
    engine = make_engine(home)
    first = engine.run(load_workflow(write_wf(home, fit="{width: 4}")))
    # log_every is declared Runtime[int] and given a value other than its default (1)
    again = engine.run(load_workflow(write_wf(home, fit="{width: 4, log_every: 2}")))
    assert states(again)["fit"] == "cached"
    assert again.steps["fit"].fingerprint == first.steps["fit"].fingerprint
    # sleep_s is an identity field: a changed value is a different step
    other = engine.run(load_workflow(write_wf(home, fit="{width: 4, sleep_s: 0.01}")))
    assert states(other)["fit"] == "succeeded"
    assert other.steps["fit"].fingerprint != first.steps["fit"].fingerprint


def test_downstream_change_reruns_only_downstream(home):
    engine = make_engine(home)
    engine.run(load_workflow(write_wf(home)))
    r = engine.run(load_workflow(write_wf(home, fit="{width: 5}")))
    assert states(r) == {"count": "cached", "fit": "succeeded"}


def test_upstream_change_reruns_both(home):
    engine = make_engine(home)
    engine.run(load_workflow(write_wf(home)))
    r = engine.run(load_workflow(write_wf(home, factor=2)))
    assert states(r) == {"count": "succeeded", "fit": "succeeded"}


def test_source_change_reruns_both(home):
    engine = make_engine(home)
    engine.run(load_workflow(write_wf(home)))
    (home / "wf" / "data" / "a.txt").write_text("one\ntwo\n")
    r = engine.run(load_workflow(write_wf(home)))
    assert states(r) == {"count": "succeeded", "fit": "succeeded"}


def test_corrupted_cache_is_detected_recomputed_and_recorded(home):
    engine = make_engine(home)
    first = engine.run(load_workflow(write_wf(home)))
    art = first.steps["fit"].artifacts["model"]
    weights = Path(art.uri) / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[10] ^= 0xFF
    weights.write_bytes(bytes(data))
    second = engine.run(load_workflow(write_wf(home)))
    assert states(second) == {"count": "cached", "fit": "succeeded"}
    # The recomputed model is the same bytes, so the same artifact: its row now points at an
    # intact copy, and the corruption stays on record in the run's events.
    assert second.steps["fit"].artifacts["model"].digest == art.digest
    with engine.sessions() as s:
        row = s.get_one(ArtifactRow, art.digest)
        assert row.status == "valid"
        assert engine.store.verify(row.uri, row.digest) == []
        ev = s.scalars(select(Event).where(Event.type == "cache_corrupt")).one()
        assert "weights.bin: sha256 mismatch" in ev.message
        assert ev.run_id == second.run_id
    # the corrupt copy was moved aside, not reused
    assert list((Path(engine.store.root) / ".quarantine").iterdir())
    third = engine.run(load_workflow(write_wf(home)))
    assert states(third)["fit"] == "cached"


def test_retry_records_attempts_and_leaves_no_partial_artifact(home):
    counter = home / "counter"
    engine = make_engine(home)
    fit = f"{{fail_times: 1, counter: '{counter}'}}"
    r = engine.run(load_workflow(write_wf(home, fit=fit, retries=1)))
    assert r.state == "succeeded" and r.steps["fit"].attempts == 2
    with engine.sessions() as s:
        rows = s.scalars(
            select(StepRun).where(StepRun.step == "fit").order_by(StepRun.attempt)
        ).all()
        assert [(x.attempt, x.state) for x in rows] == [(1, "failed"), (2, "succeeded")]
        assert "planned failure 1" in rows[0].error
        assert s.scalar(select(func.count()).select_from(Event).where(Event.type == "retry")) == 1
    store = Path(engine.store.root)
    assert not list(store.rglob("partial.bin")), "a failed attempt left files in the store"


def test_failure_cancels_downstream_and_fails_the_run(home):
    counter = home / "counter"
    engine = make_engine(home)
    fit = f"{{fail_times: 5, counter: '{counter}'}}"
    r = engine.run(load_workflow(write_wf(home, fit=fit, retries=0)))
    assert r.state == "failed"
    assert states(r) == {"count": "succeeded", "fit": "failed"}
    assert "planned failure 1" in r.error
    with engine.sessions() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(ArtifactRow).where(ArtifactRow.type == "model")
            )
            == 0
        )


def test_cache_false_reruns(home):
    engine = make_engine(home)
    engine.run(load_workflow(write_wf(home, cache="false")))
    r = engine.run(load_workflow(write_wf(home, cache="false")))
    assert states(r) == {"count": "cached", "fit": "succeeded"}


@pytest.mark.parametrize("fit_state, expected", [("succeeded", "cached"), ("running", "succeeded")])
def test_resume_after_lost_driver(home, fit_state, expected):
    """Steps the lost run finished are reused (even with cache: false); the one it was running re-runs."""
    engine = make_engine(home)
    wf = load_workflow(write_wf(home, cache="false"))
    first = engine.run(wf)
    # Make the first run look like its driver died (no heartbeat for 5 minutes).
    with engine.sessions.begin() as s:
        run = s.get(Run, first.run_id)
        run.state, run.heartbeat_at = "running", utcnow() - timedelta(minutes=5)
        fit = s.scalars(
            select(StepRun).where(StepRun.run_id == first.run_id, StepRun.step == "fit")
        ).one()
        fit.state = fit_state
    r = engine.resume(first.run_id)
    assert r.state == "succeeded"
    assert states(r) == {"count": "cached", "fit": expected}
    with engine.sessions() as s:
        assert s.get(Run, r.run_id).resumed_from == first.run_id
        old = s.get(Run, first.run_id)
        assert old.state == "failed" and "driver lost" in old.error


def test_resume_refuses_a_live_run(home):
    engine = make_engine(home)
    wf = load_workflow(write_wf(home))
    rid = engine.create_run(wf)
    with engine.sessions.begin() as s:
        run = s.get(Run, rid)
        run.state, run.heartbeat_at = "running", utcnow()
    with pytest.raises(Exception, match="still running"):
        engine.resume(rid)


def test_cancel_stops_a_running_step(home):
    engine = make_engine(home)
    wf = load_workflow(write_wf(home, fit="{sleep_s: 30}"))
    rid = engine.create_run(wf)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", engine.run(wf, run_id=rid)))
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with engine.sessions() as s:
            if s.scalars(
                select(StepRun).where(StepRun.run_id == rid, StepRun.step == "fit")
            ).first():
                break
        time.sleep(0.1)
    started = time.monotonic()
    assert engine.request_cancel(rid) == "cancelling"
    t.join(20)
    assert not t.is_alive()
    assert time.monotonic() - started < 10
    r = result["r"]
    assert r.state == "cancelled" and states(r)["fit"] == "cancelled"
    with engine.sessions() as s:
        assert s.get(Run, rid).state == "cancelled"
