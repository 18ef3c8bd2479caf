"""The licence a workflow states on an external input, through the engine (inline executor,
in-memory tracker, real SQLite): sealed into the reading step's manifest, kept on the source's
row and in its event, shown in the step's MLflow tags and in `lineage`, and part of the
fingerprint of the release that states it (stating or changing a licence makes a new release and
retrains nothing; no licence leaves every fingerprint as it always was)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

import tests.unit.engine.toy_stages  # noqa: F401  (registers the toy kinds)
from cairn.client import Client
from cairn.db.models import ArtifactRow, Event
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow

WF = """
name: toy
steps:
  count:
    kind: toy_count
    inputs: {{sources: [{data}]}}
  tune:
    kind: toy_tune
    inputs: {{model: {model}}}
  publish:
    kind: release
    inputs: {{model: tune.model}}
    config: {{register_in_mlflow: false}}
"""
LICENSED = "{source: ./base, license: apache-2.0}"


def write(home: Path, model: str, data: str = "{source: ./data, license: cc-by-4.0}") -> Path:
    base = home / "wf" / "base"
    if not base.exists():  # a model directory no step made: config.json and weights
        base.mkdir()
        (base / "config.json").write_text(json.dumps({"model_type": "toy"}))
        (base / "weights.bin").write_bytes(bytes(range(256)))
    path = home / "wf" / "toy.yaml"
    path.write_text(WF.format(model=model, data=data))
    return path


def engine(home: Path, tracker: MemoryTracker) -> Engine:
    return Engine(Settings.from_env(home / "cairn"), executor=InlineExecutor(), tracker=tracker)


def test_a_stated_licence_travels_with_its_source(home: Path) -> None:
    tracker = MemoryTracker()
    eng = engine(home, tracker)
    result = eng.run(load_workflow(write(home, LICENSED)))
    assert result.state == "succeeded"
    tuned = result.steps["tune"].artifacts["model"]
    manifest = json.loads(eng.store.read_manifest(tuned.uri))
    [parent] = manifest["parents"]
    assert (parent["name"], parent["type"], parent["license"]) == ("./base", "model", "apache-2.0")
    assert "manifest" not in parent  # no step made it: no manifest of its own to pin
    with eng.sessions() as s:
        row = s.get_one(ArtifactRow, parent["digest"])
        assert (row.step_run_id, row.type, row.manifest["license"]) == (None, "model", "apache-2.0")
        events = {
            e.data["digest"]: e for e in s.scalars(select(Event).where(Event.type == "source"))
        }
        assert events[parent["digest"]].data["license"] == "apache-2.0"
        assert "licence apache-2.0" in events[parent["digest"]].message

    steps = {r.tags["cairn.step"]: r for r in tracker.runs.values() if r.parent is not None}
    assert steps["tune"].tags["cairn.input.model.license"] == "apache-2.0"
    assert steps["count"].tags["cairn.input.sources.license"] == "cc-by-4.0"
    assert "licence apache-2.0" in steps["tune"].tags["mlflow.note.content"]

    client = Client(Settings.from_env(home / "cairn"))
    [base] = client.lineage(tuned.digest).parents
    assert (base.digest, base.step, base.license) == (parent["digest"], None, "apache-2.0")


def test_stating_a_licence_makes_a_new_release_and_retrains_nothing(home: Path) -> None:
    eng = engine(home, MemoryTracker())
    runs = [
        eng.run(load_workflow(write(home, model, data="./data")))
        for model in ("./base", LICENSED, LICENSED, "{source: ./base, license: mit}")
    ]
    assert all(r.state == "succeeded" for r in runs)
    assert [r.steps["tune"].state for r in runs] == ["succeeded", "cached", "cached", "cached"]
    assert [r.steps["publish"].state for r in runs] == [
        "succeeded",
        "succeeded",  # the first release states no licence: a new one does
        "cached",
        "succeeded",
    ]
    fingerprints = [r.steps["publish"].fingerprint for r in runs]
    assert len({*fingerprints}) == 3 and fingerprints[1] == fingerprints[2]
    cards = [(Path(r.releases[0]) / "README.md").read_text() for r in (runs[0], runs[1], runs[3])]
    assert "licence not declared: check before redistributing" in cards[0]
    assert "licence apache-2.0" in cards[1] and "licence mit" in cards[2]
    # The release states what this run's workflow says, though the tuned model it walks back
    # from was sealed when no licence was stated.
    tuned = runs[3].steps["tune"].artifacts["model"]
    assert "license" not in json.loads(eng.store.read_manifest(tuned.uri))["parents"][0]
