"""The background tracker holds its calls until something needs them, runs them in order on its
thread (placeholders resolved to the ids they stand for), and hands held calls over as plain data
that another tracker replays to the same result."""

from __future__ import annotations

import pytest

from cairn.tracking import DatasetRef, TrackingError
from cairn.tracking.background import BackgroundTracker, dump_calls, load_calls
from cairn.tracking.memory import MemoryTracker


def mirror_a_run(tracker: BackgroundTracker) -> tuple[str, str]:
    parent = tracker.start_run("r-1", "wf", {"steps": "a"}, {"cairn.workflow": "wf"})
    step = tracker.start_step(parent, "r-1", "a", {"width": 4}, {"cairn.state": "cached"})
    tracker.log_datasets(step, [DatasetRef("src", "ab" * 32, "/data", "raw", "sources")])
    tracker.end(step, "cached")
    tracker.set_tags(parent, {"cairn.state": "succeeded"})
    tracker.end(parent, "succeeded")
    return parent, step


def test_calls_are_held_until_started_then_run_in_order():
    memory, built, ids = MemoryTracker(), [], {}

    def make():
        built.append(1)
        return memory

    tracker = BackgroundTracker(make, on_id=ids.__setitem__)
    parent, step = mirror_a_run(tracker)
    assert built == [] and memory.calls == 0 and not tracker.started
    tracker.flush()  # starts the thread, then waits
    assert built == [1]
    assert ids == {parent: "mem-0", step: "mem-1"}
    assert tracker.real_id(step) == "mem-1"
    run = memory.runs["mem-1"]
    assert run.parent == "mem-0" and run.status == "FINISHED"
    assert [d.digest for d in run.datasets] == ["ab" * 32]
    assert memory.runs["mem-0"].tags["cairn.state"] == "succeeded"


def test_held_calls_replayed_elsewhere_give_the_same_runs():
    here = BackgroundTracker(MemoryTracker)
    mirror_a_run(here)
    held = here.take_held()
    assert held is not None and [c.method for c in held][:2] == ["start_run", "start_step"]
    assert here.take_held() == []  # taken away

    elsewhere, ids = MemoryTracker(), {}
    other = BackgroundTracker(lambda: elsewhere, on_id=ids.__setitem__)
    other.replay(load_calls(dump_calls(held)))  # as the journal file carries them
    other.flush()
    direct = MemoryTracker()
    mirror = BackgroundTracker(lambda: direct)
    mirror_a_run(mirror)
    mirror.flush()
    assert elsewhere.runs == direct.runs
    assert set(ids) == {c.returns for c in held if c.returns}


def test_a_started_tracker_holds_nothing_to_hand_over():
    tracker = BackgroundTracker(MemoryTracker)
    tracker.start()
    mirror_a_run(tracker)
    assert tracker.take_held() is None
    tracker.flush()


def test_a_tracker_that_cannot_start_fails_every_call_after_one_try():
    tries = []

    def make():
        tries.append(1)
        raise ConnectionError("no MLflow at http://nowhere")

    tracker = BackgroundTracker(make)
    mirror_a_run(tracker)
    with pytest.raises(TrackingError, match="6 tracking call.*ConnectionError: no MLflow"):
        tracker.flush()
    assert tries == [1]
