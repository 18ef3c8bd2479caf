"""The MLflow mirror's lineage on the in-memory tracker: a step's input model is a model input
of its run (the LoggedModel its producer logged, found by digest), datasets keep their workflow
names and full digests, models carry their step's config, a cache hit's run names the run that
computed its artifacts, and the parent run carries the workflow's description.
(tests/integration/test_mlflow_lineage.py walks the same chain in a real MLflow store.)"""

from __future__ import annotations

from pathlib import Path

import tests.unit.engine.toy_stages  # noqa: F401  (registers toy_count, toy_fit, toy_tune)
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow

WF = """
name: chain
description: Count, fit, then tune the fitted model.
steps:
  count:
    kind: toy_count
    inputs: {sources: [./data]}
  fit:
    kind: toy_fit
    inputs: {dataset: count.dataset}
    config: {width: 3}
  tune:
    kind: toy_tune
    inputs: {model: fit.model}
"""


def run_twice(home: Path) -> tuple[MemoryTracker, dict, dict]:
    (home / "wf" / "chain.yaml").write_text(WF)
    tracker = MemoryTracker()
    engine = Engine(Settings.from_env(home / "cairn"), executor=InlineExecutor(), tracker=tracker)
    first = engine.run(load_workflow(home / "wf" / "chain.yaml"))
    second = engine.run(load_workflow(home / "wf" / "chain.yaml"))
    assert first.state == second.state == "succeeded"
    by_run: dict[str, dict] = {first.run_id: {}, second.run_id: {}}
    for mid, r in tracker.runs.items():
        if r.parent is not None:
            by_run[r.tags["cairn.run_id"]][r.tags["cairn.step"]] = mid
    return tracker, by_run[first.run_id], by_run[second.run_id]


def test_a_tuned_model_names_the_model_it_read_and_that_models_dataset(home: Path) -> None:
    tracker, steps, _ = run_twice(home)
    fit, tune = tracker.runs[steps["fit"]], tracker.runs[steps["tune"]]
    [fit_model] = fit.models
    assert tune.model_inputs == [fit_model] and tune.datasets == []
    assert tracker.models[fit_model]["params"]["width"] == "3"
    assert tracker.models[fit_model]["files"] is False  # only a release's model has files
    [dataset] = fit.datasets
    count_digest = tracker.runs[steps["count"]].tags["cairn.artifact_digest"]
    assert dataset.name == "count.dataset" and dataset.digest == count_digest
    assert len(dataset.digest) == 64 and dataset.uri


def test_a_cache_hit_names_the_run_that_computed_it(home: Path) -> None:
    tracker, first, second = run_twice(home)
    for step in ("count", "fit", "tune"):
        cached = tracker.runs[second[step]]
        assert cached.tags["cairn.state"] == "cached"
        assert cached.tags["cairn.computed_by"] == first[step]
    # the cached tune still reads the fitted model (the first run's LoggedModel)
    assert tracker.runs[second["tune"]].model_inputs == tracker.runs[first["fit"]].models


def test_the_parent_run_carries_the_workflow_description(home: Path) -> None:
    tracker, steps, _ = run_twice(home)
    parent = tracker.runs[tracker.runs[steps["fit"]].parent or ""]
    note = parent.tags["mlflow.note.content"]
    assert note.startswith("Count, fit, then tune the fitted model.")
    assert parent.tags["cairn.run_id"] in note
