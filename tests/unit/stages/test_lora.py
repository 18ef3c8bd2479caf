"""LoRA in sft and dpo: the `lora` settings, the `adapter` output a step has only with them (and
the validation of a reference to it), and training in-process on the tiny model of
`tests/tiny.py`: few parameters train, the merged model equals base + adapter, dpo still starts
at ln 2. The run through a workflow and a release is tests/integration/test_lora.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cairn.errors import SpecError, StageError
from cairn.stage import ArtifactType, InputSlot, StageConfig, StageSpec, register, unregister
from cairn.stages.dpo import SPEC as DPO
from cairn.stages.dpo import DpoConfig
from cairn.stages.posttrain import lora
from cairn.stages.posttrain.config import LLAMA_PROJECTIONS, LoraSettings
from cairn.stages.sft import SPEC as SFT
from cairn.stages.sft import SftConfig
from cairn.workflow import load_workflow
from tests.unit.stages.test_posttrain import FACTS, chat, losses, trainer_for

LN2 = math.log(2)

# In-process training runs on one thread (conftest.py says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the settings -----------------------------------------------------------------------------


def test_lora_is_off_by_default_and_its_settings_are_identity() -> None:
    assert SftConfig().lora is None and DpoConfig().lora is None
    config = SftConfig(lora={})
    assert config.lora == LoraSettings()
    assert config.lora.target_modules == sorted(LLAMA_PROJECTIONS)
    ident = config.identity()["lora"]
    assert ident == {
        "r": 16,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": sorted(LLAMA_PROJECTIONS),
    }
    assert SftConfig(lora={"r": 8}).identity() != config.identity()
    # The order of the names changes nothing, so it does not change the fingerprint.
    a = SftConfig(lora={"target_modules": ["v_proj", "q_proj"]}).identity()
    b = SftConfig(lora={"target_modules": ["q_proj", "v_proj"]}).identity()
    assert a == b
    assert SftConfig(lora={"target_modules": "all-linear"}).lora.target_modules == "all-linear"


@pytest.mark.parametrize(
    ("lora_settings", "where", "says"),
    [
        ({"r": 0}, "r", "greater than or equal to 1"),
        ({"r": True}, "r", "must be a whole number, not true"),
        ({"alpha": 0}, "alpha", "greater than or equal to 1"),
        ({"dropout": 1.0}, "dropout", "less than 1"),
        ({"rank": 8}, "rank", "Extra inputs are not permitted"),
        ({"target_modules": []}, "target_modules", "is empty, so nothing would be trained"),
        ({"target_modules": ["q proj"]}, "target_modules", "'q proj' is not a module name"),
        ({"target_modules": ["q_proj", "q_proj"]}, "target_modules", "q_proj more than once"),
    ],
)
def test_bad_lora_settings_name_the_field(
    lora_settings: dict[str, Any], where: str, says: str
) -> None:
    with pytest.raises(ValidationError) as info:
        SftConfig(lora=lora_settings)
    errors = info.value.errors()
    assert any(e["loc"][:2] == ("lora", where) and says in e["msg"] for e in errors), errors


def test_every_setting_teaches_what_it_does() -> None:
    for name, field in LoraSettings.model_fields.items():
        assert field.description and len(field.description) > 40, name
    assert "adapter" in (SftConfig.model_fields["lora"].description or "")


# --- the adapter output and references to it ----------------------------------------------------


def test_the_adapter_is_an_output_only_with_lora() -> None:
    for spec, config in ((SFT, SftConfig), (DPO, DpoConfig)):
        assert spec.outputs == {"model": ArtifactType.MODEL, "adapter": ArtifactType.ADAPTER}
        assert spec.outputs_for(config()) == {"model": ArtifactType.MODEL}
        assert set(spec.outputs_for(config(lora={}))) == {"model", "adapter"}
        assert spec.output_parents == {"model": ("adapter",)}


class TakeConfig(StageConfig):
    pass


@pytest.fixture
def adapter_reader() -> Iterator[None]:
    """A kind that takes an adapter (none ships yet: the adapter is published, not consumed)."""
    register(
        StageSpec(
            kind="toy_adapter_reader",
            config_model=TakeConfig,
            inputs={"adapter": InputSlot(ArtifactType.ADAPTER)},
            outputs={"eval_report": ArtifactType.EVAL_REPORT},
            run=lambda config, inputs, ctx: {},
        )
    )
    yield
    unregister("toy_adapter_reader")


WORKFLOW = """\
name: t
steps:
  chat:
    kind: sft
    inputs: {{model: ./base, data: ./sft.jsonl}}
    config: {{max_steps: 2, warmup_steps: 1{lora}}}
  look:
    kind: toy_adapter_reader
    inputs:
      adapter: chat.adapter
"""


def test_a_reference_to_the_adapter_of_a_step_without_lora_is_refused(
    adapter_reader: None, tmp_path: Path
) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "sft.jsonl").write_text(json.dumps(chat("Who?", "Hamlet.")) + "\n")
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.format(lora=""))
    with pytest.raises(SpecError) as info:
        load_workflow(path)
    [issue] = info.value.issues
    assert (issue.file, issue.line, issue.field) == (str(path), 10, "steps.look.inputs.adapter")
    assert "makes 'adapter' only with `lora` set" in issue.message
    assert "add lora: to step chat" in issue.fix

    path.write_text(WORKFLOW.format(lora=", lora: {r: 4}"))
    wf = load_workflow(path)
    assert [r.output for r in wf.steps["look"].inputs["adapter"]] == ["adapter"]


# --- training with LoRA, in-process --------------------------------------------------------------


def _logits(model: Any, tok: Any) -> Any:
    import torch

    ids = tok("To be, or not to be", return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def test_sft_with_lora_trains_few_parameters_and_merges_into_base_plus_adapter(
    tiny_model: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cairn.stages.posttrain.worker import export

    rows = [chat(q, a) for q, a in FACTS] * 2
    config = dict(max_steps=6, global_batch_size=8, lr=1e-2, warmup_steps=1, log_every=2)
    settings = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    trainer = trainer_for("sft", tiny_model, rows, tmp_path, **config, lora=settings)
    trained, total = lora.trainable(trainer.model)
    # r·(in + out) per targeted matrix: q, v (64×64) and down (128→64), in each of 2 layers
    assert trained == 2 * (4 * (64 + 64) * 2 + 4 * (128 + 64))
    assert trained < total / 10
    base_weights = {n: p.clone() for n, p in trainer.model.get_base_model().named_parameters()}
    trainer.train()
    for name, p in trainer.model.get_base_model().named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base_weights[name]), name  # the input model stays frozen

    export(trainer, tmp_path / "merged", tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted(lora.ADAPTER_FILES)
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] is None  # no machine's path in the digest
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    # In name order, not in the order of peft's set (which changes with the hash seed).
    assert adapter_config["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    merged_files = {p.name for p in (tmp_path / "merged").iterdir()}
    assert "model.safetensors" in merged_files and not any("adapter" in n for n in merged_files)

    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    before = _logits(base, tok)
    with_adapter = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    expected = _logits(with_adapter, tok)
    assert (before - expected).abs().max() > 1e-3  # the adapter learned something
    assert torch.allclose(_logits(merged, tok), expected, atol=1e-4)


def test_the_same_seed_draws_the_same_adapter(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    weights = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        rows = [chat(q, a) for q, a in FACTS]
        trainer = trainer_for(
            "sft", tiny_model, rows, tmp_path / name, max_steps=1, warmup_steps=0, lora={"r": 2}
        )
        weights.append({n: p for n, p in trainer.model.named_parameters() if "lora_A" in n})
    assert weights[0] and weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_dpo_with_lora_starts_at_ln2_against_the_base(tiny_model: Path, tmp_path: Path) -> None:
    rows = [{"prompt": q, "chosen": "yes, gladly.", "rejected": "no, never."} for q, _ in FACTS]
    trainer = trainer_for(
        "dpo",
        tiny_model,
        rows,
        tmp_path,
        max_steps=4,
        warmup_steps=1,
        global_batch_size=8,
        lr=1e-2,
        log_every=1,
        lora={"r": 4},
    )
    assert trainer.ref_model is None  # the reference is the model with its adapter switched off
    trainer.train()
    curve = losses(trainer)
    assert abs(curve[0] - LN2) < 1e-6, curve
    assert losses(trainer, "rewards/margins")[-1] > 0


def test_targets_the_model_lacks_are_refused_before_training(tiny_model: Path) -> None:
    lora.check_targets(tiny_model, LoraSettings(), "sft")  # the Llama projections: all there
    lora.check_targets(tiny_model, LoraSettings(target_modules="all-linear"), "sft")
    with pytest.raises(StageError) as info:
        lora.check_targets(tiny_model, LoraSettings(target_modules=["q_proj", "c_attn"]), "sft")
    text = str(info.value)
    assert "target_modules names c_attn" in text and "LlamaForCausalLM" in text
    assert "down_proj" in text and "fix:" in text  # the layers it does have


def test_a_lora_run_resumes_from_its_checkpoint_to_the_same_adapter(
    tiny_model: Path, tmp_path: Path
) -> None:
    """A restarted worker group resumes from transformers' checkpoint (which holds the adapter,
    not the frozen weights) and ends where an uninterrupted run ends."""
    import torch

    rows = [chat(q, a) for q, a in FACTS]
    config = dict(
        max_steps=4, warmup_steps=1, global_batch_size=4, lr=1e-2, checkpoint_every=2, lora={"r": 2}
    )
    finals = []
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
        trainer = trainer_for("sft", tiny_model, rows, tmp_path / name, **config)
        checkpoint = tmp_path / "whole" / "hf" / "checkpoint-2"
        trainer.train(resume_from_checkpoint=str(checkpoint) if name == "resumed" else None)
        finals.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    saved = {p.name for p in checkpoint.iterdir()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    assert finals[0].keys() == finals[1].keys()
    for n in finals[0]:
        assert torch.allclose(finals[0][n], finals[1][n], atol=1e-6), n
