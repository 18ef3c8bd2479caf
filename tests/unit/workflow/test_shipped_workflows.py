"""Every workflow file the repo ships validates as shipped, so a user's first `cairn validate`
of one never meets a mistake of ours.

The GPU recipes import a base model that is not in the repo (`tulu3-8b-gpu.yaml` names a Llama
directory the user places beside it): there, a tiny stand-in model takes its place, and
everything else in the file (configs, resources, data and task paths) is checked as written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.workflow import load_workflow
from tests import REPO
from tests.tiny import make_tiny_model

WORKFLOWS = REPO / "workflows"
SHIPPED = sorted(p.name for p in WORKFLOWS.glob("*.yaml"))
NEEDS_A_BASE = {"tulu3-8b-gpu.yaml": "./models/Llama-3.1-8B"}


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_workflow_validates(name: str, tmp_path: Path) -> None:
    path = WORKFLOWS / name
    if name in NEEDS_A_BASE:
        stand_in = make_tiny_model(tmp_path / "base")
        text = path.read_text()
        assert NEEDS_A_BASE[name] in text
        text = text.replace(NEEDS_A_BASE[name], str(stand_in))
        text = text.replace("./data/", f"{WORKFLOWS}/data/").replace(
            "./evals/", f"{WORKFLOWS}/evals/"
        )
        path = tmp_path / name
        path.write_text(text)
    workflow = load_workflow(path)
    assert workflow.steps


def test_the_tulu3_recipes_run_every_post_training_kind() -> None:
    for name in ("tulu3.yaml", "tulu3-8b-gpu.yaml"):
        text = (WORKFLOWS / name).read_text()
        for kind in ("sft", "dpo", "rlvr", "evaluate", "release"):
            assert f"kind: {kind}" in text, (name, kind)
