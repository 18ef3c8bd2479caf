"""Fixtures the post-training stage tests share (sft, dpo, rlvr, LoRA)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama of tests/tiny.py, made once per test module."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """In-process training on one thread: on a shared 2-core machine a second thread mostly
    waits for a core (one test went from 2 s to 20 s that way)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
