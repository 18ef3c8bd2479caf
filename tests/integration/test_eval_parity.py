"""The `evaluate` stage's scores are exactly what `lm_eval` gives when run by hand.

An eval report is only worth its digests if someone else can recompute its numbers with the
standard tool. This test runs the stage on the shipped Shakespeare suite and a tiny model, then
runs the `lm_eval` command line in a subprocess on the same model directory and the task files
the report shipped (from inside the report's `tasks/`, as `report.json` says to), and requires
every metric and every per-sample response to be equal, not merely close.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.evaluate import SPEC, EvaluateConfig
from cairn.testing import local_context
from tests.tiny import make_tiny_model

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "workflows" / "evals" / "shakespeare"
LM_EVAL = Path(sys.executable).parent / "lm_eval"
BATCH_SIZE = 16
SEED = 1234


@pytest.mark.slow
def test_stage_scores_equal_the_lm_eval_command_line(tmp_path):
    model = make_tiny_model(tmp_path / "model")
    ctx = local_context(tmp_path / "stage")
    inputs = {
        "model": InputArtifact(model, ArtifactType.MODEL, "ab" * 32, name="model.model"),
        "tasks": InputArtifact(SUITE, ArtifactType.RAW, "cd" * 32, name="evals/shakespeare"),
    }
    # A bare model folder has no lineage to check the tasks against: allowed explicitly.
    config = EvaluateConfig(
        tasks=["shakespeare"], batch_size=BATCH_SIZE, seed=SEED, allow_contaminated=True
    )
    meta = SPEC.run(config, inputs, ctx)["eval_report"]
    report_dir = ctx.outputs_root / "eval_report"
    report = json.loads((report_dir / "report.json").read_text())

    out = tmp_path / "cli"
    argv = [
        str(LM_EVAL), "run",
        "--model", "hf",
        "--model_args", f"pretrained={model},dtype=float32",
        "--device", "cpu",
        "--include_path", ".",
        "--tasks", "shakespeare",
        "--batch_size", str(BATCH_SIZE),
        "--seed", str(SEED),
        "--log_samples",
        "--output_path", str(out),
    ]  # fmt: skip
    # The hand-run command is the one the report gives, up to where lm_eval and its output live.
    given = report["reproduce"]["argv"]
    assert given[1:-1] == argv[1:-1] and given[0] == "lm_eval"
    env = {
        **os.environ,
        **report["reproduce"]["env"],
        # Keep the CLI's datasets cache out of ~/.cache; it does not change a score.
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
    }
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1"
    run = subprocess.run(
        argv, cwd=report_dir / "tasks", env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]

    [results_file] = out.rglob("results_*.json")
    cli = json.loads(results_file.read_text())
    cli_metrics = {
        f"{task}/{key.split(',')[0]}": value
        for task, values in cli["results"].items()
        for key, value in values.items()
        if "," in key and "_stderr," not in key
    }
    assert len(meta["metrics"]) == 6
    assert meta["metrics"] == cli_metrics  # exact equality, every metric
    for task, scores in report["scores"].items():
        for metric, entry in scores.items():
            stderr = cli["results"][task][f"{metric}_stderr,{entry['filter']}"]
            assert entry["stderr"] == (None if stderr == "N/A" else stderr)
    assert cli["n-samples"] == {t: e["n_samples"] for t, e in report["tasks"].items()}

    # Per sample, too: the same documents, prompts and model responses. (The CLI writes
    # responses as strings; the stage keeps them as numbers.)
    for task in report["tasks"]:
        [cli_file] = out.rglob(f"samples_{task}_*.jsonl")
        ours = [json.loads(x) for x in (report_dir / "samples" / f"{task}.jsonl").open()]
        theirs = [json.loads(x) for x in cli_file.open()]
        assert len(ours) == len(theirs) == report["tasks"][task]["n_samples"]["effective"]
        for a, b in zip(sorted(ours, key=by_doc), sorted(theirs, key=by_doc), strict=True):
            assert a["doc"] == b["doc"] and a["prompt_hash"] == b["prompt_hash"]
            assert stringify(a["filtered_resps"]) == b["filtered_resps"]


def by_doc(row: dict) -> int:
    return row["doc_id"]


def stringify(value):
    """The CLI's sample files hold every response leaf as str(value)."""
    if isinstance(value, list):
        return [stringify(v) for v in value]
    return str(value)
