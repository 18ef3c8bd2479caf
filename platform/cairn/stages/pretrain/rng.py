"""The random-number state of a training run, kept in every checkpoint as JSON, never as a pickle.

A resumed run must draw the numbers an uninterrupted one would (loop.py), so each checkpoint holds
the state of Python's `random`, numpy's global generator, torch's CPU generator and, on GPUs, the
CUDA generators. They used to be one `torch.save`d dict (`rng.pt`) read back with
`torch.load(weights_only=False)`: a pickle, and unpickling runs whatever code the file names. A
checkpoint folder is a file a user can be handed, or one anybody with write access to the Cairn
home can change, so the state is now `rng.json`: integers, one float, and the torch generators'
bytes in base64, which loading only parses and checks before it sets anything.

A checkpoint that holds only `rng.pt` (written by a Cairn before this change) is refused, never
opened. Reading it safely is possible for torch's part (`weights_only=True`) but not for numpy's,
whose array the restricted unpickler refuses unless numpy's reconstruct functions are allowed into
it; and resuming without the state would quietly break the promise that a resumed run trains the
same weights as an uninterrupted one. Such a checkpoint only appears where someone put it: the
engine keeps checkpoints per step fingerprint, which includes this package's source, so a Cairn
with this module never resumes one written without it. The message says how to start over.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cairn.errors import StageError

FILE = "rng.json"
LEGACY_FILE = "rng.pt"  # a pickle: refused, never loaded (see the module docstring)
FORMAT = 1


def save(directory: Path) -> None:
    """Write this process's generator states to `directory/rng.json`."""
    version, internal, gauss_next = random.getstate()
    legacy = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "format": FORMAT,
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": legacy["bit_generator"],
            "key": [int(k) for k in legacy["state"]["key"]],
            "pos": int(legacy["state"]["pos"]),
            "has_gauss": int(legacy["has_gauss"]),
            "gauss": float(legacy["gauss"]),
        },
        "torch": _encode(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_encode(s) for s in torch.cuda.get_rng_state_all()]
    (Path(directory) / FILE).write_text(json.dumps(state), encoding="utf-8")


def restore(directory: Path, start_over: Path) -> None:
    """Set this process's generators to the states saved in `directory` (see `read`)."""
    state = read(directory, start_over)
    path = Path(directory) / FILE
    try:
        python = state["python"]
        random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
        numpy = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": numpy["bit_generator"],
                "state": {"key": np.asarray(numpy["key"], np.uint32), "pos": numpy["pos"]},
                "has_gauss": numpy["has_gauss"],
                "gauss": numpy["gauss"],
            }
        )
        torch.set_rng_state(_decode(state["torch"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([_decode(s) for s in state["cuda"]])
    except (ValueError, TypeError, KeyError, OverflowError, RuntimeError) as e:
        raise _unusable(path, f"holds a state its generators refuse ({e})", start_over) from e


def read(directory: Path, start_over: Path) -> dict[str, Any]:
    """The generator states saved in `directory`, parsed and checked but not set.

    Raises `StageError` naming the file and how to start over (`start_over`: the folder of the
    step's checkpoints) when they are missing, unreadable, or only in the pickled `rng.pt`.
    """
    path = Path(directory) / FILE
    if not path.is_file():
        if (Path(directory) / LEGACY_FILE).exists():
            raise StageError(
                f"pretrain: checkpoint {directory} keeps its random-number state in "
                f"{LEGACY_FILE}, a pickle written by an older Cairn; Cairn no longer unpickles "
                "checkpoint files (unpickling runs any code the file names) and cannot resume "
                "the run bit for bit without that state; fix: delete the step's checkpoints "
                f"({start_over}) and re-run the step to train it from step 0"
            )
        raise _unusable(path, "is missing", start_over)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _unusable(path, f"is not readable JSON ({e})", start_over) from e
    problem = _problem(state)
    if problem is not None:
        raise _unusable(path, problem, start_over)
    return state  # type: ignore[no-any-return]


def _problem(state: Any) -> str | None:
    """What is wrong with a parsed rng.json, or None: the shapes `save` writes, nothing else."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return f"is not a format-{FORMAT} random-number state"
    python, numpy = state.get("python"), state.get("numpy")
    if not isinstance(python, dict) or not _ints(python.get("state")):
        return "has no Python `random` state (python.state: a list of integers)"
    if not isinstance(python.get("gauss_next"), float | int | None):
        return "has a Python `random` state whose gauss_next is not a number"
    if not isinstance(numpy, dict) or not _ints(numpy.get("key")):
        return "has no numpy state (numpy.key: a list of integers)"
    torch_states = [state.get("torch"), *(state.get("cuda") or [])]
    if not isinstance(state.get("cuda", []), list) or not all(
        isinstance(s, str) for s in torch_states
    ):
        return "has no torch generator state (torch: base64 bytes; cuda: a list of them)"
    try:
        for s in torch_states:
            base64.b64decode(s, validate=True)
    except binascii.Error as e:
        return f"holds a torch generator state that is not base64 ({e})"
    return None


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _encode(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text, validate=True)), dtype=torch.uint8)


def _unusable(path: Path, problem: str, start_over: Path) -> StageError:
    return StageError(
        f"pretrain: checkpoint file {path} {problem}, so the run cannot resume from it bit for "
        f"bit; fix: delete the step's checkpoints ({start_over}) and re-run the step to train it "
        "from step 0 (or restore the checkpoint folder from a copy)"
    )
