"""Integration fixtures: the session's trail (one tiny lifecycle run once, reused through Cairn's
own cache), tiny workflows that share its curated dataset, and an isolated CAIRN_HOME.

Every end-to-end test used to curate (and most to pretrain) for itself, and the suite paid for
Ray Data and Ray Train start-ups many times over. Now `trail` runs the whole tiny lifecycle
(curate → pretrain → sft → dpo → evaluate → serve → release) once, in one CAIRN_HOME, from one
folder; a test that needs a curated dataset or a trained model writes its workflow into that
folder (`trail.workflow(...)`) and runs it in that home, where the steps it shares with the trail
are cache hits. Tests may add runs and artifacts to the trail's home, never change or delete its
artifacts; a test that corrupts something corrupts what it made itself.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.results import RunResult
from tests import REPO

POEMS = REPO / "workflows" / "data" / "shakespeare" / "poems"

# The tiny curate and pretrain steps every end-to-end test builds on. The trail runs exactly
# these (with its post-training steps after them); a workflow with the same values gets cache
# hits in the trail's home. global_batch_size 6 divides by 2 and 3 workers (the elastic test).
TINY = """
name: {name}
steps:
  corpus:
    kind: curate
    inputs:
      sources: [./poems]{eval_tasks}
    config: {{vocab_size: 384, seq_len: 64, val_fraction: 0.1, min_words: {min_words}}}
  {model}:
    kind: pretrain
    inputs: {{dataset: corpus.dataset}}
    config:
      hidden_size: 64
      num_layers: 1
      num_heads: 1
      intermediate_size: 128
      max_steps: {max_steps}
      global_batch_size: 6
      warmup_steps: 2
      checkpoint_every: {checkpoint_every}
      eval_every: {eval_every}
      eval_batches: 1
      log_every: 2
      lr: {lr}
    resources: {{num_workers: {workers}, cpus_per_worker: 1}}
    cache: {cache}
"""
# The trail's own pretrain step: what a test passes to `tiny` to get the same model.
TRAIL_MODEL = {"max_steps": 40, "checkpoint_every": 10, "eval_every": 20, "lr": 0.003}

LIFECYCLE = """
  chat:
    kind: sft
    inputs: {model: model.model, data: ./chat/sft.jsonl}
    config: {max_steps: 6, warmup_steps: 1, global_batch_size: 4, max_length: 64, log_every: 2}
    resources: {num_workers: 1, cpus_per_worker: 1}
  aligned:
    kind: dpo
    inputs: {model: chat.model, data: ./chat/dpo.jsonl}
    config: {max_steps: 4, warmup_steps: 1, global_batch_size: 4, max_length: 64, log_every: 2}
    resources: {num_workers: 1, cpus_per_worker: 1}
  scores:
    kind: evaluate
    inputs: {model: aligned.model, tasks: ./evals}
    config: {tasks: [shakespeare], limit: 8}
  endpoint:
    kind: serve
    inputs: {model: aligned.model}
    config: {engine: transformers, smoke_max_tokens: 4}
  publish:
    kind: release
    inputs: {model: aligned.model, evals: [scores.eval_report]}
    config: {name: tiny-release, include_sources: true}
"""


def tiny(
    name: str = "tiny",
    *,
    model: str = "model",
    max_steps: int = 8,
    checkpoint_every: int = 4,
    eval_every: int = 4,
    lr: float = 0.003,
    min_words: int = 0,
    workers: int | str = 2,
    eval_tasks: bool = True,
    cache: bool = True,
) -> str:
    """The text of a tiny curate → pretrain workflow (see TINY). A test about something other
    than training on several workers passes `workers=1`: each worker is a process that imports
    torch, transformers and Ray Train, about 5 s of a core's time on the 2-core CI machine."""
    return TINY.format(
        name=name,
        model=model,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        eval_every=eval_every,
        lr=lr,
        min_words=min_words,
        workers=f"'{workers}'" if isinstance(workers, str) else workers,
        eval_tasks="\n      eval_tasks: [./evals]" if eval_tasks else "",
        cache=str(cache).lower(),
    )


def stock(folder: Path) -> Path:
    """`folder` with the data the tiny workflows read: poems, chat data, the eval suite."""
    folder.mkdir(parents=True, exist_ok=True)
    for src, dest in (
        (POEMS, "poems"),
        (REPO / "workflows" / "data" / "chat", "chat"),
        (REPO / "workflows" / "evals" / "shakespeare", "evals"),
    ):
        if not (folder / dest).exists():
            shutil.copytree(src, folder / dest)
    return folder


def write_tiny(folder: Path, **kw: object) -> Path:
    """A tiny workflow file in `folder` (stocked with its data) for a test of its own."""
    path = stock(folder) / "tiny.yaml"
    path.write_text(tiny(**kw))  # type: ignore[arg-type]
    return path


def settings_for(home: Path):  # type: ignore[no-untyped-def]
    """The embedded default under `home`, whatever CAIRN_* the environment holds."""
    from cairn.settings import Settings

    return Settings.embedded(home)


@dataclass
class Trail:
    """The session's tiny lifecycle: where its files are, its CAIRN_HOME and how it ended."""

    folder: Path
    home: Path
    result: RunResult

    def workflow(self, file: str, text: str) -> Path:
        """Write a workflow into the trail's folder, so `./poems` is the trail's source."""
        path = self.folder / file
        path.write_text(text)
        return path

    def engine(self):  # type: ignore[no-untyped-def]
        from cairn.engine import Engine

        return Engine(settings_for(self.home))

    def env(self) -> dict[str, str]:
        return cli_env(self.home)

    @property
    def bundle(self) -> Path:
        return Path(self.result.releases[0])


@pytest.fixture(scope="session")
def trail(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Trail:
    """The tiny lifecycle, run once for the session (about a minute and a half)."""
    from cairn.engine import Engine
    from cairn.workflow import load_workflow

    folder = stock(tmp_path_factory.mktemp("trail"))
    path = folder / "lifecycle.yaml"
    path.write_text(tiny("trail", **TRAIL_MODEL) + LIFECYCLE)  # type: ignore[arg-type]
    home = folder / "home"
    result = Engine(settings_for(home)).run(load_workflow(path))
    assert result.state == "succeeded", {n: s.error for n, s in result.steps.items()}
    return Trail(folder, home, result)


# A LoRA fine-tune of the trail's model and its release (issue 16), for the session: test_lora
# checks the adapter, the merge and the release; test_serve serves that release with vLLM and
# the transformers engine, which shows that vLLM loads a merged model without a start of its own.
LORA = """
  tune:
    kind: sft
    inputs: {model: model.model, data: ./chat/sft.jsonl}
    config:
      max_steps: 4
      warmup_steps: 1
      global_batch_size: 4
      max_length: 64
      log_every: 1
      lr: 0.01
      lora: {r: 4, alpha: 8}
    resources: {num_workers: 1, cpus_per_worker: 1}
  ship:
    kind: release
    inputs: {model: tune.model}
    config: {name: lora-release}
"""


@pytest.fixture(scope="session")
def lora_run(trail: Trail) -> RunResult:
    """The trail's curate and pretrain steps (cache hits), then `tune` (sft with LoRA) and
    `ship` (its release), in the trail's home."""
    from cairn.workflow import load_workflow

    path = trail.workflow("lora.yaml", tiny("lora", **TRAIL_MODEL) + LORA)  # type: ignore[arg-type]
    result = trail.engine().run(load_workflow(path))
    assert result.state == "succeeded", {n: s.error for n, s in result.steps.items()}
    return result


@pytest.fixture
def cairn_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh CAIRN_HOME with its own SQLite database, MLflow store and artifact store."""
    home = tmp_path / "home"
    for var in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(home))
    yield home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ADDRESS", "CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE")
    }
    env["CAIRN_HOME"] = str(home)
    env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"
    return env
