"""LoRA through a workflow (issue 16): an sft step with `lora:` on the trail's tiny pretrained
model (cache hits in the trail's home), then a release of its merged model: the session's
`lora_run` (conftest). test_serve serves that release with vLLM, which loads the merged model as
it loads any Hugging Face model. (dpo with LoRA, whose first loss must stay ln 2, runs in-process
in tests/unit/stages/test_lora.py: a second Ray Train step here would cost the suite more than
it checks.)

What a user of the result relies on: the merged model is a plain Hugging Face model equal to the
base with its adapter loaded by peft; the adapter is an artifact of its own; the step's log,
metrics and metadata say how few parameters trained; the release carries the adapter, says
base + adapter + merge, and `cairn audit` checks the adapter's copy like every other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from cairn.results import RunResult
from tests.integration.conftest import Trail, settings_for


def manifest(artifact: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(artifact.uri) / "manifest.json").read_text())
    return data


def logits(model: Any, tok: Any) -> Any:
    import torch

    ids = tok("To be, or not to be", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_the_merged_model_is_the_base_with_its_adapter(trail: Trail, lora_run: RunResult) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = lora_run.steps
    assert steps["model"].state == "cached"  # the trail's pretrained model
    base_dir = Path(steps["model"].artifacts["model"].uri)
    tune = steps["tune"].artifacts
    assert set(tune) == {"model", "adapter"} and tune["adapter"].type == "adapter"
    adapter_dir = Path(tune["adapter"].uri)
    assert {p.name for p in adapter_dir.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "manifest.json",
    }

    tok = AutoTokenizer.from_pretrained(tune["model"].uri)
    merged = AutoModelForCausalLM.from_pretrained(tune["model"].uri, use_safetensors=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    before = logits(base.eval(), tok)
    expected = logits(PeftModel.from_pretrained(base, adapter_dir).eval(), tok)
    assert (expected - before).abs().max() > 1e-3  # four steps moved it
    assert torch.allclose(logits(merged.eval(), tok), expected, atol=1e-4)

    # The lineage: base + data → adapter → merged model, each naming the other by digest.
    model_meta, adapter_meta = manifest(tune["model"]), manifest(tune["adapter"])
    base_digest = steps["model"].artifacts["model"].digest
    assert model_meta["metadata"]["lora"] == {
        "r": 4,
        "alpha": 8,
        "dropout": 0.0,
        "target_modules": [
            "down_proj",
            "gate_proj",
            "k_proj",
            "o_proj",
            "q_proj",
            "up_proj",
            "v_proj",
        ],
        "base": base_digest,
        "adapter": tune["adapter"].digest,
        "merge": "peft merge_and_unload",
    }
    assert {(p["slot"], p["digest"]) for p in model_meta["parents"]} >= {
        ("model", base_digest),
        ("adapter", tune["adapter"].digest),
    }
    assert adapter_meta["metadata"]["base_model"] == {"digest": base_digest, "name": "model.model"}


def test_few_parameters_train_and_the_run_says_how_many(trail: Trail, lora_run: RunResult) -> None:
    from cairn.client import Client

    meta = manifest(lora_run.steps["tune"].artifacts["adapter"])["metadata"]
    trained, total = meta["trainable_parameters"], meta["total_parameters"]
    assert 0 < trained < total / 10
    model_meta = manifest(lora_run.steps["tune"].artifacts["model"])["metadata"]
    assert model_meta["trainable_parameters"] == trained
    assert model_meta["parameters"] == total - trained  # the merged model has no adapter left

    client = Client(settings_for(trail.home))
    log = client.logs(lora_run.run_id, "tune").logs["tune"]
    assert f"{trained:,} of {total:,} parameters train" in log
    metrics = client.metrics(lora_run.run_id, "tune")
    assert metrics["lora/trainable_parameters"] == [(0, float(trained))]


def test_the_release_carries_the_adapters_and_audits(lora_run: RunResult, tmp_path: Path) -> None:
    import cairn

    bundle = Path(lora_run.releases[0])
    tune_adapter = lora_run.steps["tune"].artifacts["adapter"].digest
    lineage = json.loads((bundle / "lineage.json").read_text())
    merges = {m["step"]: m for m in lineage["lora_merges"]}
    assert set(merges) == {"tune"}
    assert merges["tune"]["adapter"] == tune_adapter
    assert merges["tune"]["model"] == lineage["release"]["model"]
    assert merges["tune"]["base"] == lora_run.steps["model"].artifacts["model"].digest
    copied = bundle / merges["tune"]["bundle_path"] / "adapter_model.safetensors"
    assert copied.is_file()
    node = next(n for n in lineage["nodes"] if n["digest"] == tune_adapter)
    assert node["type"] == "adapter" and "adapter_model.safetensors" in node["copies"]
    card = (bundle / "README.md").read_text()
    assert "### LoRA" in card and merges["tune"]["bundle_path"] in card
    assert "peft merge_and_unload" in card

    report = cairn.audit(bundle)  # the merged model loads and generates, from the bundle
    assert report.ok, [(c.name, c.problems) for c in report.checks if not c.ok]

    tampered = tmp_path / "bundle"
    shutil.copytree(bundle, tampered)
    target = tampered / merges["tune"]["bundle_path"] / "adapter_model.safetensors"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    report = cairn.audit(tampered, load_model=False)
    assert not report.ok
    copies = next(c for c in report.checks if c.name == "copies")
    assert any("adapter_model.safetensors: differs from" in p for p in copies.problems), copies

    # An adapter left out of the bundle (its file and every record of the copy) is missing.
    shutil.rmtree(tampered)
    shutil.copytree(bundle, tampered)
    (tampered / merges["tune"]["bundle_path"] / "adapter_model.safetensors").unlink()
    lineage["nodes"] = [
        {**n, "copies": {k: v for k, v in n["copies"].items() if "safetensors" not in k}}
        if n["digest"] == tune_adapter
        else n
        for n in lineage["nodes"]
    ]
    (tampered / "lineage.json").write_text(json.dumps(lineage))
    report = cairn.audit(tampered, load_model=False)
    copies = next(c for c in report.checks if c.name == "copies")
    assert any(
        f"adapter_model.safetensors of adapter {tune_adapter[:12]}: missing" in p
        for p in copies.problems
    ), copies
