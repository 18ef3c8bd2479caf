"""The release bundle the audit and signing tests break: written by the real release stage from a
small chain sealed in a real store (raw source → dataset → model with one checkpoint → eval
report) whose files are a few bytes each, so it is shaped like a lifecycle's release and built in
well under a second. `clean` is built once per module; `bundle` is a fresh copy per test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.release import SPEC, ReleaseConfig
from cairn.testing import local_context
from tests.unit.stages.test_release import WORKFLOW
from tests.unit.stages.test_release import _seal as seal_staged


def _seal(store: ArtifactStore, files: dict[str, str], kind: str, type_: str, parents: list):
    """Seal an artifact of `files` ({path: text}) as the engine would after a step of `kind`."""
    staging = Path(store.root).parent / "staging" / kind
    for rel, text in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_text(text)
    return seal_staged(store, staging, kind, type_, parents)


def _parent(slot: str, digest: str, type_: str, uri: str) -> dict:
    # As the engine records an input: `name` is the path for a source, `step.output` otherwise.
    name = uri if type_ == "raw" else f"upstream.{type_}"
    return {"slot": slot, "digest": digest, "type": type_, "uri": uri, "name": name}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release bundle as the release stage writes it (shape of a real one, tiny files)."""
    root = tmp_path_factory.mktemp("chain")
    store = ArtifactStore(root / "store")
    source = root / "corpus.txt"
    source.write_text("To be, or not to be.\n")
    src, _ = describe_source(str(source), "raw")
    dataset = _seal(
        store,
        {"dataset.json": "{}", "tokenizer/tokenizer.json": "{}", "documents.jsonl": "{}\n"},
        "curate",
        "dataset",
        [_parent("sources", src, "raw", str(source))],
    )
    model = _seal(
        store,
        {
            "config.json": '{"model_type": "llama"}',
            "model.safetensors": "weights",
            "training_metrics.jsonl": '{"step": 1, "train/loss": 6.0}\n',
            "checkpoints/step-0000001/model.safetensors": "weights at step 1",
            "checkpoints.json": json.dumps(
                [{"step": 1, "tokens_seen": 64, "path": "checkpoints/step-0000001"}]
            ),
        },
        "pretrain",
        "model",
        [_parent("dataset", dataset.digest, "dataset", dataset.uri)],
    )
    report = _seal(
        store,
        {"report.json": json.dumps({"model": {"digest": model.digest}})},
        "evaluate",
        "eval_report",
        [_parent("model", model.digest, "model", model.uri)],
    )
    ctx = local_context(root / "release", step="release")
    ctx.workflow = {**WORKFLOW, "text": "name: demo\nsteps: {}\n"}
    meta = SPEC.run(
        ReleaseConfig(),
        {
            "model": InputArtifact(Path(model.uri), ArtifactType.MODEL, model.digest, {}),
            "evals": [InputArtifact(Path(report.uri), ArtifactType.EVAL_REPORT, report.digest, {})],
        },
        ctx,
    )
    return ctx.output_path("release") / meta["release"]["bundle"]


@pytest.fixture
def bundle(clean: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean bundle for one test to break, with a file beside it."""
    copy = tmp_path / "site" / "bundle"
    shutil.copytree(clean, copy)
    return copy
