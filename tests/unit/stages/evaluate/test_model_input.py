"""Tests that evaluate loads a model's weights from safetensors only.

`pytorch_model.bin` is a pickle, and loading one can run code it names; a model folder a user was
handed that holds only that is refused before lm-eval (or transformers) opens it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cairn.errors import StageError
from cairn.stages.evaluate import EvaluateConfig, harness


class Planted:
    """A pickle payload: unpickling it creates `marker` (as a real attack would run a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def model_dir(root: Path) -> Path:
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))
    (root / "tokenizer.json").write_text("{}")
    return root


def test_a_model_with_only_pickled_weights_is_refused_unopened(tmp_path):
    folder = model_dir(tmp_path / "imported")
    marker = tmp_path / "payload-ran"
    torch.save({"w": torch.zeros(2), "x": Planted(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(StageError) as err:
        harness.check_model(folder, EvaluateConfig(tasks=["t"]))
    message = str(err.value)
    assert f"model input {folder} holds its weights only as pytorch_model.bin, a pickle" in message
    assert "fix: where you trust the model's origin, convert it" in message
    assert not marker.exists()


def test_a_model_without_weights_is_refused(tmp_path):
    folder = model_dir(tmp_path / "empty")
    with pytest.raises(StageError, match=r"has no weights \(model\.safetensors, .*fix: save"):
        harness.check_model(folder, EvaluateConfig(tasks=["t"]))
    (folder / "model.safetensors").write_bytes(b"")  # present: the check passes on to loading
    assert harness.check_model(folder, EvaluateConfig(tasks=["t"])) == {
        "max_position_embeddings": 64
    }
