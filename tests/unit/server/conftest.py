"""A `cairn server` app over a toy deployment (inline executor, in-memory tracker, real SQLite),
with one finished toy run and a token per role."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import tests.unit.engine.toy_stages  # noqa: F401  (registers toy_count and toy_fit)
from cairn.client import Client
from cairn.results import RunResult
from cairn.server import create_app
from cairn.settings import Settings
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow

WF = """
name: toy
steps:
  count:
    kind: toy_count
    inputs: {sources: [./data]}
  fit:
    kind: toy_fit
    inputs: {dataset: count.dataset}
    config: {width: 4}
"""


@dataclass
class Deployment:
    client: Client
    http: TestClient
    tokens: dict[str, str]  # role → secret
    run: RunResult
    workflow: Path

    def as_(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    (tmp_path / "wf" / "data").mkdir(parents=True)
    (tmp_path / "wf" / "data" / "a.txt").write_text("one\ntwo\nthree\n")
    wf = tmp_path / "wf" / "toy.yaml"
    wf.write_text(WF)
    client = Client(
        Settings.from_env(tmp_path / "cairn"), executor=InlineExecutor(), tracker=MemoryTracker()
    )
    run = client.run(load_workflow(wf))

    # The unit-test stand-in for the driver process `cairn server` starts: the same engine run
    # of the pending run, in a thread (the integration tests start the real process).
    def start(settings: Settings, run_id: str) -> int:
        workflow = client.recorded_workflow(run_id)
        thread = threading.Thread(target=client.engine.run, args=(workflow, run_id))
        thread.start()
        thread.join()
        return 0

    monkeypatch.setattr("cairn.engine.detached.start", start)
    tokens = {role: client.create_token(role, role) for role in ("viewer", "submitter", "admin")}
    http = TestClient(create_app(client))
    return Deployment(client, http, tokens, run, wf)
