"""The decontamination gate end to end, through the engine: an eval item planted in the training
data is caught by curate, and evaluate refuses tasks that no training dataset was checked
against until the workflow says `allow_contaminated: true`, which the report then records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.engine import Engine
from cairn.settings import Settings
from cairn.workflow import load_workflow

from .conftest import stock, write_tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EVALUATE = """
  scores:
    kind: evaluate
    inputs: {{model: model.model, tasks: ./evals}}
    config: {{tasks: [shakespeare_next_word], limit: 4{allow}}}
"""


def workflow(folder, checked: bool, allow: bool):
    path = write_tiny(
        folder, max_steps=2, checkpoint_every=2, eval_every=2, eval_tasks=checked, workers=1
    )
    text = path.read_text()
    path.write_text(text + EVALUATE.format(allow=", allow_contaminated: true" if allow else ""))
    return load_workflow(path)


def test_evaluate_refuses_unchecked_tasks_until_allowed_and_curate_catches_a_planted_item(
    cairn_home, ray_local, tmp_path
):
    folder = stock(tmp_path / "wf")  # its own folder and home: it plants an item in a poem
    # Plant one eval item, verbatim, inside a training poem.
    item = json.loads((folder / "evals" / "next_word.jsonl").read_text().splitlines()[0])
    leaked = " ".join(str(v) for v in item.values() if isinstance(v, str))
    poem = sorted((folder / "poems").iterdir())[0]
    poem.write_text(poem.read_text() + "\n\n" + leaked + "\n")
    engine = Engine(Settings.from_env())

    refused = engine.run(workflow(folder, checked=False, allow=False))
    assert refused.steps["scores"].state == "failed", {n: s.error for n, s in refused.steps.items()}
    error = refused.steps["scores"].error or ""
    assert "shakespeare_next_word" in error and "allow_contaminated" in error
    assert "eval_tasks" in error

    allowed = engine.run(workflow(folder, checked=False, allow=True))
    assert allowed.steps["scores"].state == "succeeded", allowed.steps["scores"].error
    meta = allowed.steps["scores"].artifacts["eval_report"].metadata
    assert meta["allow_contaminated"] is True
    report = json.loads(
        (Path(allowed.steps["scores"].artifacts["eval_report"].uri) / "report.json").read_text()
    )
    assert report["contamination"]["allowed"] is True

    checked = engine.run(workflow(folder, checked=True, allow=False))
    assert checked.steps["scores"].state == "succeeded", checked.steps["scores"].error
    dataset = checked.steps["corpus"].artifacts["dataset"].metadata
    assert dataset["decontamination"]["documents"] == 1
    assert dataset["filters"]["decontamination"] == 1
    assert checked.steps["scores"].artifacts["eval_report"].metadata["allow_contaminated"] is False
