"""Integration fixtures: a tiny real workflow (real curate + pretrain) and an isolated CAIRN_HOME."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POEMS = REPO / "workflows" / "data" / "shakespeare" / "poems"

TINY = """
name: tiny
steps:
  corpus:
    kind: curate
    inputs:
      sources: [./poems]
    config: {{vocab_size: 384, seq_len: 64, val_fraction: 0.1, min_words: {min_words}}}
  model:
    kind: pretrain
    inputs: {{dataset: corpus.dataset}}
    config:
      hidden_size: 64
      num_layers: 1
      num_heads: 1
      intermediate_size: 128
      max_steps: {max_steps}
      global_batch_size: 4
      warmup_steps: 2
      checkpoint_every: {checkpoint_every}
      eval_every: 4
      eval_batches: 1
      log_every: 2
      lr: {lr}
    resources: {{num_workers: 2, cpus_per_worker: 1}}
"""


def write_tiny(folder: Path, max_steps=8, checkpoint_every=4, lr=0.003, min_words=0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "poems").exists():
        shutil.copytree(POEMS, folder / "poems")
    p = folder / "tiny.yaml"
    p.write_text(
        TINY.format(
            max_steps=max_steps, checkpoint_every=checkpoint_every, lr=lr, min_words=min_words
        )
    )
    return p


@pytest.fixture
def cairn_home(tmp_path, monkeypatch):
    """A fresh CAIRN_HOME with its own SQLite database, MLflow store and artifact store."""
    home = tmp_path / "home"
    for var in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(home))
    return home


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
