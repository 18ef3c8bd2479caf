"""The whole lifecycle on real parts: curate → pretrain → sft → dpo → evaluate → serve → release.

One tiny workflow (the session's trail, see conftest) runs through the engine on Ray, with MLflow
on its SQLite store; then the test checks what a user of the release and an auditor would: the release passes `cairn audit`, the
released model loads with transformers and generates (test_serve.py serves it with vLLM),
and MLflow holds the whole chain (parent and nested runs, datasets with Cairn's digests, logged
models read as model inputs, eval scores tied to the evaluated model, the registered release with
lineage tags; test_mlflow_lineage.py walks it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.conftest import Trail

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def lifecycle(trail: Trail) -> dict:
    """The session's trail (conftest): the tiny lifecycle, run once for every test that needs it."""
    return {"result": trail.result, "engine": trail.engine(), "bundle": trail.bundle}


def test_release_passes_audit_and_names_a_tampered_file(lifecycle: dict, tmp_path: Path) -> None:
    from cairn.cli import app

    bundle: Path = lifecycle["bundle"]
    ok = CliRunner().invoke(app, ["audit", str(bundle), "--json"])
    report = json.loads(ok.stdout)
    assert ok.exit_code == 0 and report["ok"], report
    lineage = json.loads((bundle / "lineage.json").read_text())
    kinds = {n["kind"] for n in lineage["nodes"]}
    assert {"curate", "pretrain", "sft", "dpo", "evaluate"} <= kinds
    assert any(n["type"] == "raw" for n in lineage["nodes"])
    index = json.loads((bundle / "checkpoints/index.json").read_text())
    assert {c["step_name"] for c in index} >= {"model"} and all(c["copied"] for c in index)

    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    target = copy / "model" / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[len(data) // 3] ^= 0x40
    target.write_bytes(bytes(data))
    bad = CliRunner().invoke(app, ["audit", str(copy), "--no-load"])
    assert bad.exit_code == 1 and "model/model.safetensors" in bad.output


def test_released_model_loads_with_transformers(lifecycle: dict) -> None:
    """(vLLM serving the released bundle, and answering what transformers computes, is
    tests/integration/test_serve.py.)"""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = lifecycle["bundle"] / "model"
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tok("To be", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert tok.chat_template and "<|assistant|>" in tok.chat_template


def test_mlflow_holds_the_whole_chain(lifecycle: dict) -> None:
    from mlflow import MlflowClient

    engine, result = lifecycle["engine"], lifecycle["result"]
    client = MlflowClient(engine.settings.mlflow_uri)
    exp = client.get_experiment_by_name("cairn/trail")
    runs = client.search_runs(
        [exp.experiment_id], f"tags.`cairn.run_id` = '{result.run_id}'", max_results=100
    )
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    nested = {r.data.tags["cairn.step"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(parent) == 1
    assert set(nested) == {"corpus", "model", "chat", "aligned", "scores", "endpoint", "publish"}

    # sft reads the pretrained model as a model input (its LoggedModel), its data as a dataset
    # (get_run: search_runs leaves a run's model inputs out)
    [read] = client.get_run(nested["chat"].info.run_id).inputs.model_inputs
    read_digest = client.get_logged_model(read.model_id).tags["cairn.artifact_digest"]
    assert read_digest == result.steps["model"].artifacts["model"].digest
    sft_inputs = nested["chat"].inputs.dataset_inputs
    assert [d.dataset.name for d in sft_inputs] == ["./chat/sft.jsonl"]

    models = client.search_logged_models([exp.experiment_id])
    by_digest = {m.tags.get("cairn.artifact_digest"): m for m in models}
    aligned = result.steps["aligned"].artifacts["model"].digest
    assert {result.steps[s].artifacts["model"].digest for s in ("model", "chat")} <= set(by_digest)
    scored = by_digest[aligned]
    scores = result.steps["scores"].artifacts["eval_report"].metadata["metrics"]
    tied = {m.key: m.value for m in scored.metrics or []}
    assert scores and all(tied[k] == pytest.approx(v) for k, v in scores.items())

    versions = client.search_model_versions("name = 'tiny-release'")
    assert len(versions) == 1
    tags = versions[0].tags
    assert tags["cairn.model_digest"] == aligned
    assert tags["cairn.lineage.corpus"] == result.steps["corpus"].artifacts["dataset"].digest
    assert tags["cairn.release_digest"] == result.steps["publish"].artifacts["release"].digest


def test_release_eval_scores_recompute_with_lm_eval_from_the_bundle_alone(
    lifecycle: dict, tmp_path: Path
) -> None:
    """An auditor with only the bundle reruns the report's own `lm_eval` command on the
    released model and task files and gets every score, every standard error and every
    per-sample response exactly: the stage's numbers are lm-eval's, not merely close to them.
    (This was test_eval_parity.py, which ran the stage on a model of its own.)"""
    import os
    import subprocess
    import sys

    bundle: Path = lifecycle["bundle"]
    [report_dir] = [p.parent for p in (bundle / "evals").glob("*/report.json")]
    report = json.loads((report_dir / "report.json").read_text())
    argv = list(report["reproduce"]["argv"])
    assert argv[0] == "lm_eval" and argv[1] == "run" and "--log_samples" in argv
    assert argv[argv.index("--include_path") + 1] == "."  # run from the report's tasks/
    argv[0] = str(Path(sys.executable).parent / "lm_eval")
    i = argv.index("--model_args")
    assert argv[i + 1].startswith("pretrained=")
    argv[i + 1] = f"pretrained={bundle / 'model'}," + argv[i + 1].split(",", 1)[1]
    out = tmp_path / "out"
    argv[argv.index("--output_path") + 1] = str(out)
    env = {**os.environ, **report["reproduce"]["env"], "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_DATASETS_OFFLINE"] == "1"
    run = subprocess.run(
        argv, cwd=report_dir / "tasks", env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [results_file] = out.rglob("results_*.json")
    cli = json.loads(results_file.read_text())
    recomputed = {
        f"{task}/{key.split(',')[0]}": value
        for task, values in cli["results"].items()
        for key, value in values.items()
        if "," in key and "_stderr," not in key
    }
    released = lifecycle["result"].steps["scores"].artifacts["eval_report"].metadata
    assert len(released["metrics"]) == 6 and recomputed == released["metrics"]
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
        by_doc = lambda row: row["doc_id"]  # noqa: E731
        for a, b in zip(sorted(ours, key=by_doc), sorted(theirs, key=by_doc), strict=True):
            assert a["doc"] == b["doc"] and a["prompt_hash"] == b["prompt_hash"]
            assert _as_strings(a["filtered_resps"]) == b["filtered_resps"]


def _as_strings(value):  # type: ignore[no-untyped-def]
    """The CLI's sample files hold every response leaf as str(value)."""
    if isinstance(value, list):
        return [_as_strings(v) for v in value]
    return str(value)
