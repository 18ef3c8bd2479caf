"""Tests that a checkpoint's files are read without running code, and fail with a fix.

The RNG state round-trips exactly (a resumed run draws what an uninterrupted one would); a
pickled `rng.pt` from an older Cairn, or a doctored one, is refused without being opened; a
doctored tensor file is refused by torch's restricted unpickler; a truncated or corrupt file is
a Cairn error naming the file and how to start over. The resumes themselves are in
test_pretrain.py.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cairn.errors import StageError
from cairn.stages.pretrain import driver, loop, rng
from cairn.stages.pretrain.model import MODEL_STATE_FILE, load_tensors


class Planted:
    """A pickle payload: unpickling it creates `marker` (as a real attack would run a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def draws() -> tuple:
    """One draw from every generator the state covers, Gaussian caches included."""
    return (
        random.random(),
        random.gauss(0, 1),
        np.random.random_sample(3).tolist(),
        float(np.random.standard_normal()),
        torch.rand(4).tolist(),
        torch.randn(3).tolist(),
    )


def plant(path: Path, marker: Path) -> None:
    torch.save({"torch": torch.get_rng_state(), "numpy": Planted(marker)}, path)


def test_saved_state_round_trips_exactly(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    draws()  # one Gaussian each: Python's and numpy's generators now cache the pair's second
    rng.save(tmp_path)
    expected = draws()
    for _ in range(5):
        draws()  # the generators move on (training continues, or another process starts fresh)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert draws() != expected

    rng.restore(tmp_path, start_over=tmp_path)
    assert draws() == expected
    saved = json.loads((tmp_path / rng.FILE).read_text())
    assert saved["numpy"]["has_gauss"] == 1 and saved["python"]["gauss_next"] is not None


@pytest.mark.gpu
def test_cuda_generator_states_round_trip(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.cuda.manual_seed_all(5)
    rng.save(tmp_path)
    expected = torch.rand(4, device="cuda").tolist()
    torch.cuda.manual_seed_all(6)
    rng.restore(tmp_path, start_over=tmp_path)
    assert torch.rand(4, device="cuda").tolist() == expected


def test_a_pickled_rng_file_is_refused_without_being_opened(tmp_path):
    # The payload works: unpickling a copy of it creates its marker.
    control = tmp_path / "control-ran"
    plant(tmp_path / "control.pt", control)
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()

    checkpoint = tmp_path / "train" / "step-00000020"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    plant(checkpoint / rng.LEGACY_FILE, marker)
    torch.save({"w": torch.zeros(2)}, checkpoint / MODEL_STATE_FILE)
    start_over = tmp_path / "pretrain-0123"
    for attempt in (rng.read, rng.restore):
        with pytest.raises(StageError) as err:
            attempt(checkpoint, start_over)
        message = str(err.value)
        assert f"checkpoint {checkpoint}" in message and "rng.pt, a pickle" in message
        assert "older Cairn" in message
        assert f"fix: delete the step's checkpoints ({start_over}) and re-run" in message
    # The worker's loader refuses it before loading anything else.
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    with pytest.raises(StageError, match="rng.pt, a pickle"):
        loop._load_checkpoint(checkpoint, model, optimizer, scheduler, False, start_over)
    assert not marker.exists()


def test_the_driver_refuses_the_latest_checkpoint_before_starting_workers(tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoints" / "train" / "step-00000020"
    checkpoint.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    plant(checkpoint / rng.LEGACY_FILE, marker)

    @contextmanager
    def as_directory():
        yield str(checkpoint)

    earlier = SimpleNamespace(checkpoint=SimpleNamespace(as_directory=as_directory))
    monkeypatch.setattr(driver.raytrain, "finished", lambda ctx, done: earlier)
    ctx = SimpleNamespace(checkpoint_dir=tmp_path / "checkpoints")
    with pytest.raises(StageError, match=r"rng\.pt, a pickle .*fix: delete the step's"):
        driver._check_resumable(ctx)
    assert not marker.exists()
    # No earlier attempt: nothing to check.
    monkeypatch.setattr(driver.raytrain, "finished", lambda ctx, done: None)
    driver._check_resumable(ctx)


def test_a_doctored_tensor_file_is_refused_by_the_restricted_unpickler(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / MODEL_STATE_FILE
    torch.save({"w": torch.zeros(2), "extra": Planted(marker)}, path)
    with pytest.raises(StageError) as err:
        load_tensors(path, "cpu", tmp_path / "ckpts")
    message = str(err.value)
    assert f"checkpoint file {path} holds objects other than tensors" in message
    assert "Unsupported global" in message  # what torch refused, for whoever investigates
    assert f"fix: delete the step's checkpoints ({tmp_path / 'ckpts'})" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"format": 1, "python": {"version": 3, "sta', "is not readable JSON"),
        (b"\xff\xfe{}", "is not readable JSON"),
        ("[1, 2, 3]", "is not a format-1 random-number state"),
        ('{"format": 1, "python": {"state": "abc"}}', "has no Python `random` state"),
    ],
)
def test_a_corrupt_rng_file_names_the_file_and_the_fix(tmp_path, content, problem):
    path = tmp_path / rng.FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StageError) as err:
        rng.restore(tmp_path, tmp_path / "ckpts")
    message = str(err.value)
    assert f"checkpoint file {path} {problem}" in message
    assert f"fix: delete the step's checkpoints ({tmp_path / 'ckpts'})" in message


def test_a_well_formed_state_the_generators_refuse_is_a_cairn_error(tmp_path):
    rng.save(tmp_path)
    state = json.loads((tmp_path / rng.FILE).read_text())
    torch_state = state["torch"]
    for broken in (
        {**state, "torch": torch_state[: len(torch_state) // 2]},  # truncated bytes
        {**state, "python": {**state["python"], "state": state["python"]["state"][:10]}},
        {**state, "numpy": {**state["numpy"], "key": [2**40] * 624}},
        {**state, "torch": "not base64!"},
    ):
        (tmp_path / rng.FILE).write_text(json.dumps(broken))
        with pytest.raises(StageError, match=rf"checkpoint file {tmp_path / rng.FILE} .*fix:"):
            rng.restore(tmp_path, tmp_path)
    (tmp_path / rng.FILE).unlink()
    with pytest.raises(StageError, match=r"rng\.json is missing.*fix:"):
        rng.restore(tmp_path, tmp_path)


def test_a_truncated_tensor_file_names_the_file(tmp_path):
    path = tmp_path / "optimizer_by_name.pt"
    torch.save({"state": {"w": torch.arange(1000.0)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(StageError, match=rf"{path} is not a readable torch file .*fix:"):
        load_tensors(path, "cpu", tmp_path)
    with pytest.raises(StageError, match=rf"{tmp_path / 'gone.pt'} is missing"):
        load_tensors(tmp_path / "gone.pt", "cpu", tmp_path)


def test_a_corrupt_state_file_names_the_file(tmp_path):
    (tmp_path / loop.STATE_FILE).write_text('{"step": 20, "tokens_seen": ')
    with pytest.raises(StageError, match=rf"{tmp_path / loop.STATE_FILE} cannot be read .*fix:"):
        loop.read_state(tmp_path)
    (tmp_path / loop.STATE_FILE).write_text('{"step": 20, "bogus": 1}')
    with pytest.raises(StageError, match=r"state\.json cannot be read .*bogus"):
        loop.read_state(tmp_path)
