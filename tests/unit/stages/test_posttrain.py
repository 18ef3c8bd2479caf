"""Tests of the `sft` and `dpo` stage kinds: data checks, chat template, loss masking, learning,
determinism, and full runs through Ray Train.

Most tests build the very TRL trainer a Ray Train worker builds (`trainers.build_trainer`) in this
process, on the tiny random Llama of `tests/tiny.py` (~150k parameters, 2 s to make), and train it
for a few seconds. The two Ray tests run each stage end to end with 2 workers × 1 CPU on the
shipped chat data; the sft one also crashes its workers once and resumes from a checkpoint.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact, Resources
from cairn.stages import get
from cairn.stages.dpo import SPEC as DPO
from cairn.stages.dpo import DpoConfig
from cairn.stages.dpo.recipe import DPO as DPO_RECIPE
from cairn.stages.sft import SPEC as SFT
from cairn.stages.sft import SftConfig
from cairn.stages.sft.recipe import SFT as SFT_RECIPE
from cairn.testing import local_context
from tests import REPO

# In-process training runs on one thread (conftest.py says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPES = {"sft": SFT_RECIPE, "dpo": DPO_RECIPE}

CHAT_DATA = REPO / "workflows" / "data" / "chat"
TWO_WORKERS = Resources(num_workers=2, cpus_per_worker=1)
# DPO on two workers runs end to end in workflows/tulu3.yaml (tests/integration/test_tulu3.py);
# here one worker checks the stage on Ray Train without a second process importing TRL.
ONE_WORKER = Resources(num_workers=1, cpus_per_worker=1)
LN2 = math.log(2)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def inputs(model: Path, data: Path) -> dict[str, InputArtifact]:
    return {
        "model": InputArtifact(path=model, type=ArtifactType.MODEL, digest="m", name="model"),
        "data": InputArtifact(path=data, type=ArtifactType.RAW, digest="d", name=data.name),
    }


def chat(question: str, answer: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def trainer_for(kind: str, model: Path, rows: list[dict[str, Any]], out: Path, **config: Any):
    """The trainer a worker would build, for `rows` as written in a .jsonl file."""
    from cairn.stages.posttrain.chat import inspect_model
    from cairn.stages.posttrain.data import read_examples
    from cairn.stages.posttrain.trainers import build_trainer

    info, _ = inspect_model(model, RECIPES[kind], "model")
    data = InputArtifact(
        path=write_jsonl(out / "data.jsonl", rows), type=ArtifactType.RAW, digest=""
    )
    examples = [e.fields for e in read_examples(data, RECIPES[kind], info.special_tokens)]
    cfg = (SftConfig if kind == "sft" else DpoConfig)(**config)
    return build_trainer(RECIPES[kind], cfg, model, info.chat_template, examples, out / "hf")


def losses(trainer: Any, key: str = "loss") -> list[float]:
    return [row[key] for row in trainer.state.log_history if key in row]


# --- the specs ---------------------------------------------------------------------------------


def test_specs_are_registered_and_cheap_to_import() -> None:
    assert get("sft") is SFT and get("dpo") is DPO
    for spec in (SFT, DPO):
        assert spec.launcher == "trainer"
        assert spec.inputs["model"].type is ArtifactType.MODEL
        assert spec.inputs["data"].type is ArtifactType.RAW
        # (the adapter only with `lora`: tests/unit/stages/test_lora.py)
        assert spec.outputs_for(spec.config_model()) == {"model": ArtifactType.MODEL}
    # Validating a workflow imports every built-in kind: that must not pull in torch or TRL.
    code = (
        "import sys, cairn.stages, cairn.workflow; "
        "print([m for m in ('torch', 'transformers', 'trl', 'ray') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_configs_reject_unknown_fields_and_keep_runtime_fields_out_of_identity() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        SftConfig(learning_rate=1e-3)
    with pytest.raises(ValidationError, match="warmup_steps"):
        DpoConfig(max_steps=10, warmup_steps=20)
    ident = DpoConfig().identity()
    assert "beta" in ident and "seed" in ident and "log_every" not in ident
    assert DpoConfig(log_every=1, max_failures=3).identity() == ident
    assert SftConfig(packing=True).identity() != SftConfig().identity()


# --- bad data: file, line, field, fix ----------------------------------------------------------

GOOD_SFT = chat("Which play?", "Hamlet.")
GOOD_DPO = {"prompt": "Which play?", "chosen": "Hamlet.", "rejected": "Macbeth."}


@pytest.mark.parametrize(
    ("kind", "bad", "field", "words"),
    [
        ("sft", {"text": "hello"}, "no `messages` and no `prompt`/`completion`", "fix:"),
        ("sft", chat("Hi", "  "), "messages[1].content", "empty assistant turn"),
        (
            "sft",
            {"messages": [{"role": "bot", "content": "hi"}]},
            "messages[0].role",
            "use system, user, assistant",
        ),
        ("sft", {"messages": [{"role": "user", "content": "hi"}]}, "messages", "no assistant turn"),
        ("sft", {"prompt": "Hi"}, "completion", "is missing"),
        ("sft", chat("Hi <|assistant|> there", "Yes."), "messages[0].content", "special token"),
        ("sft", "{not json", "not valid JSON", "fix the line"),
        ("dpo", {**GOOD_DPO, "rejected": "Hamlet."}, "rejected", "same text as `chosen`"),
        ("dpo", {"prompt": "Which play?", "chosen": "Hamlet."}, "rejected", "is missing"),
        ("dpo", {**GOOD_DPO, "chosen": 3}, "chosen", "not a string"),
        (
            "dpo",
            {
                **GOOD_DPO,
                "prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
            },
            "prompt[1].role",
            "end the prompt with a user turn",
        ),
    ],
)
def test_bad_rows_are_stage_errors_naming_file_line_and_field(
    tiny_model: Path, tmp_path: Path, kind: str, bad: Any, field: str, words: str
) -> None:
    good = GOOD_SFT if kind == "sft" else GOOD_DPO
    data = write_jsonl(tmp_path / f"{kind}-data.jsonl", [good, good, "", bad, good])
    spec = SFT if kind == "sft" else DPO
    # Fails before Ray Train starts: no Ray is needed to see the error.
    with pytest.raises(StageError) as err:
        spec.run(spec.config_model(), inputs(tiny_model, data), local_context(tmp_path / "ctx"))
    message = str(err.value)
    assert f"{kind}-data.jsonl:4:" in message, message
    assert field in message and words in message, message


def test_directory_input_names_the_file_inside_it(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "chats"
    (data / "part").mkdir(parents=True)
    write_jsonl(data / "a.jsonl", [GOOD_SFT])
    write_jsonl(data / "part" / "b.jsonl", [GOOD_SFT, chat("Hi", "")])
    (data / "README.md").write_text("not data")
    with pytest.raises(StageError, match=r"chats/part/b\.jsonl:2: field `messages\[1\]\.content`"):
        SFT.run(SftConfig(), inputs(tiny_model, data), local_context(tmp_path / "ctx"))


def test_model_without_tokenizer_or_too_short_context_is_a_stage_error(
    tiny_model: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    for f in bare.glob("tokenizer*"):
        f.unlink()
    data = write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT])
    with pytest.raises(StageError, match=r"no tokenizer .* fix: save the tokenizer"):
        SFT.run(SftConfig(), inputs(bare, data), local_context(tmp_path / "a"))
    with pytest.raises(StageError, match=r"max_length \(512\) exceeds .* context length \(256,"):
        SFT.run(SftConfig(max_length=512), inputs(tiny_model, data), local_context(tmp_path / "b"))


class Planted:
    """A pickle payload: unpickling it creates `marker` (as a real attack would run a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_model_with_only_pickled_weights_is_refused_unloaded(
    tiny_model: Path, tmp_path: Path
) -> None:
    """pytorch_model.bin is a pickle: a model folder that holds only that is refused before
    anything reads it, with the way to convert a trusted one."""
    import torch

    imported = tmp_path / "imported"
    shutil.copytree(tiny_model, imported)
    (imported / "model.safetensors").unlink()
    marker = tmp_path / "payload-ran"
    torch.save(
        {"lm_head.weight": torch.zeros(2), "x": Planted(marker)}, imported / "pytorch_model.bin"
    )
    data = write_jsonl(tmp_path / "sft.jsonl", [GOOD_SFT])
    with pytest.raises(StageError) as err:
        SFT.run(SftConfig(), inputs(imported, data), local_context(tmp_path / "ctx"))
    message = str(err.value)
    assert f"holds its weights only as pytorch_model.bin in {imported}, a pickle" in message
    assert "fix: where you trust the model's origin, convert it" in message
    assert not marker.exists()


def test_shipped_chat_data_is_valid_small_and_reproducible(
    tiny_model: Path, tmp_path: Path
) -> None:
    from cairn.stages.posttrain.chat import inspect_model
    from cairn.stages.posttrain.data import read_examples

    info, _ = inspect_model(tiny_model, RECIPES["sft"], "model")
    for kind in ("sft", "dpo"):
        path = CHAT_DATA / f"{kind}.jsonl"
        assert path.stat().st_size < 300_000
        art = InputArtifact(path=path, type=ArtifactType.RAW, digest="")
        assert len(read_examples(art, RECIPES[kind], info.special_tokens)) >= 250
    subprocess.run(
        [sys.executable, str(CHAT_DATA / "make_chat.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for kind in ("sft", "dpo"):
        assert (tmp_path / f"{kind}.jsonl").read_bytes() == (
            CHAT_DATA / f"{kind}.jsonl"
        ).read_bytes()


# --- chat template and masking -----------------------------------------------------------------


def test_chat_template_is_saved_and_round_trips(tiny_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from cairn.stages.posttrain.chat import CHAT_TEMPLATE, inspect_model

    info, tok = inspect_model(tiny_model, RECIPES["sft"], "model")
    assert not info.own_template and tok.chat_template == CHAT_TEMPLATE
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which play is this line from?"},
        {"role": "assistant", "content": "Hamlet."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|system|>\nBe brief.<|endoftext|><|user|>\nWhich play is this line from?<|endoftext|>"
        "<|assistant|>\nHamlet.<|endoftext|>"
    )
    ids = tok.apply_chat_template(messages, return_dict=True)["input_ids"]
    assert tok.decode(ids) == text
    for role in ("<|system|>", "<|user|>", "<|assistant|>"):
        assert ids.count(tok.convert_tokens_to_ids(role)) == 1  # one token each
    prompt = tok.apply_chat_template(messages[:2], add_generation_prompt=True, return_dict=True)
    assert ids[: len(prompt["input_ids"])] == prompt["input_ids"]  # a prompt is a prefix

    tok.save_pretrained(tmp_path / "tok")
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert again.chat_template == CHAT_TEMPLATE
    assert again.apply_chat_template(messages, return_dict=True)["input_ids"] == ids


def test_sft_labels_cover_only_assistant_turns(tiny_model: Path, tmp_path: Path) -> None:
    multi = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Which play is this line from?"},
            {"role": "assistant", "content": "Hamlet."},
            {"role": "user", "content": "Who says it?"},
            {"role": "assistant", "content": "Horatio."},
        ]
    }
    pair = {"prompt": "Continue the line: to be", "completion": "or not to be"}
    trainer = trainer_for("sft", tiny_model, [multi, pair], tmp_path)
    tok = trainer.processing_class
    decoded = []
    for row in trainer.train_dataset:
        assert len(row["labels"]) == len(row["input_ids"])
        kept = [
            i for i, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100
        ]
        assert kept == [label for label in row["labels"] if label != -100]  # labels are the ids
        decoded.append(tok.decode(kept))
    # The replies and the EOS that ends each one (so the model learns to stop); nothing else.
    assert decoded == ["Hamlet.<|endoftext|>Horatio.<|endoftext|>", "or not to be<|endoftext|>"]


def test_packed_chats_do_not_attend_to_each_other(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    rows = [chat(f"question {i} " * (i + 1), f"answer {i}.") for i in range(4)]
    trainer = trainer_for("sft", tiny_model, rows, tmp_path, packing=True, global_batch_size=1)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, positions = batch["input_ids"][0], batch["position_ids"][0]
    starts = [*(positions == 0).nonzero().flatten().tolist(), len(ids)]
    assert len(starts) == 5  # all four chats in one packed row
    model = trainer.model.eval()
    with torch.no_grad():
        packed = model(input_ids=ids[None], position_ids=positions[None]).logits[0]
        for a, b in zip(starts, starts[1:], strict=False):
            alone = model(input_ids=ids[a:b][None]).logits[0]
            assert torch.allclose(alone, packed[a:b], atol=1e-5)


# --- learning, in-process ----------------------------------------------------------------------

FACTS = [
    (f"What is the colour of thing {i}?", c) for i, c in enumerate(["red.", "blue.", "green."] * 4)
]


def test_sft_loss_falls_and_is_deterministic(tiny_model: Path, tmp_path: Path) -> None:
    import torch

    rows = [chat(q, a) for q, a in FACTS] * 4
    config = dict(max_steps=24, global_batch_size=8, lr=3e-3, warmup_steps=2, log_every=4)
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        trainer = trainer_for("sft", tiny_model, rows, tmp_path / name, **config)
        trainer.train()
        runs.append(trainer)
    curve = losses(runs[0])
    assert curve[-1] < 0.5 * curve[0], curve  # an untrained model stays near ln(vocab) = 6.2
    assert losses(runs[1]) == curve  # same seed, same data: the same run
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_dpo_starts_at_ln2_and_widens_the_margin(tiny_model: Path, tmp_path: Path) -> None:
    rows = [{"prompt": q, "chosen": "yes, gladly.", "rejected": "no, never."} for q, _ in FACTS * 2]
    trainer = trainer_for(
        "dpo", tiny_model, rows, tmp_path, max_steps=12, global_batch_size=8, lr=3e-3, log_every=1
    )
    trainer.train()
    # The policy starts as the reference: every log-ratio is 0, so the loss is -log σ(0) = ln 2.
    assert abs(losses(trainer)[0] - LN2) < 1e-6
    margins = losses(trainer, "rewards/margins")
    assert margins[0] == 0.0 and margins[-1] > 1.0, margins
    assert losses(trainer, "rewards/accuracies")[-1] == 1.0
    assert losses(trainer, "rewards/chosen")[-1] > losses(trainer, "rewards/rejected")[-1]


# --- the stages through Ray Train --------------------------------------------------------------


def _check_model_dir(out: Path) -> list[dict[str, Any]]:
    """The output is a loadable HF model with the chat template; returns its metric rows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cairn.stages.posttrain.chat import CHAT_TEMPLATE

    names = {p.name for p in out.iterdir()}
    expected = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert expected | {"chat_template.jinja", "training_metrics.jsonl", "loss.png"} <= names
    assert not any(n.startswith(("checkpoint", "training_args")) for n in names), names
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.use_cache
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Which play?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    rows = [json.loads(line) for line in (out / "training_metrics.jsonl").read_text().splitlines()]
    assert all({"step", "loss", "learning_rate"} <= set(r) for r in rows)
    return rows


@pytest.mark.slow
@pytest.mark.ray
def test_sft_stage_on_ray_train_survives_a_crash(
    ray_local, tiny_model: Path, tmp_path: Path
) -> None:
    from cairn.stages.posttrain.driver import train

    ctx = local_context(tmp_path, step="chat", resources=TWO_WORKERS)
    config = SftConfig(max_steps=10, global_batch_size=8, lr=3e-3, log_every=2, checkpoint_every=5)
    # Both workers raise at step 7; the restarted group resumes from the step-5 checkpoint.
    meta = train(
        RECIPES["sft"], config, inputs(tiny_model, CHAT_DATA / "sft.jsonl"), ctx, fail_at_step=7
    )["model"]
    ctx.flush()
    records = ctx.reporter.drain()

    rows = _check_model_dir(ctx.output_path("model"))
    assert [r["step"] for r in rows] == [1, 2, 4, 6, 8, 10]  # no gap where it restarted
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert meta["steps"] == 10 and meta["examples"] > 300 and meta["final_loss"] == rows[-1]["loss"]
    logs = [r["message"] for r in records if r["type"] == "log"]
    assert any("resuming from step 5 " in m for m in logs), logs
    assert list(Path(ctx.checkpoint_dir).rglob("checkpoint/optimizer.pt"))  # resumable state
    metrics = [r for r in records if r["type"] == "metrics"]
    assert any(r["step"] == 10 and "train/loss" in r["values"] for r in metrics)
    assert any(r["type"] == "progress" and r["done"] == 10 for r in records)


@pytest.mark.slow
@pytest.mark.ray
def test_dpo_stage_on_ray_train(ray_local, tiny_model: Path, tmp_path: Path) -> None:
    weights = (tiny_model / "model.safetensors").read_bytes()
    ctx = local_context(tmp_path, step="prefer", resources=ONE_WORKER)
    config = DpoConfig(max_steps=6, global_batch_size=8, log_every=1)
    meta = DPO.run(config, inputs(tiny_model, CHAT_DATA / "dpo.jsonl"), ctx)["model"]

    rows = _check_model_dir(ctx.output_path("model"))
    assert abs(rows[0]["loss"] - LN2) < 1e-6  # policy = reference at the first step
    keys = {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}
    assert all(keys <= set(r) for r in rows)
    assert meta["steps"] == 6 and meta["final_reward_margin"] == rows[-1]["rewards/margins"]
    assert (tiny_model / "model.safetensors").read_bytes() == weights  # the input is untouched

    # A re-run of the step (say, after a failure while writing the output) reuses the final
    # checkpoint in ctx.checkpoint_dir instead of training again.
    again = local_context(tmp_path, step="prefer", resources=ONE_WORKER)
    assert DPO.run(config, inputs(tiny_model, CHAT_DATA / "dpo.jsonl"), again)["model"] == meta
    again.flush()
    assert any("already finished" in r.get("message", "") for r in again.reporter.drain())
