"""Tests of the `rlvr` stage kind: row checks (at validation, before Ray, and in the driver), the
verifiers as TRL reward functions, GRPO's first step against its reference, the metrics it logs,
and a run through Ray Train that crashes once and resumes with its rollouts whole.

The in-process tests build the very GRPOTrainer a Ray Train worker builds, on the tiny random
Llama of `tests/tiny.py`. A random model never answers arithmetic, so where a test needs rewards
that vary within a group (a group of equal rewards gives zero loss and proves nothing) it
registers a verifier that scores something random text does vary in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.rlvr import SPEC, RlvrConfig, verifiers
from cairn.stages.rlvr.recipe import RLVR, check_data
from cairn.stages.rlvr.rewards import ROLLOUTS_FILE, VerifierReward
from cairn.testing import local_context
from tests.tiny import make_tiny_model

# In-process training runs on one thread (conftest.py says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def has_vowel_e(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    """A verifier random text sometimes passes: rewards vary within a group."""
    return float("e" in completion)


@pytest.fixture
def coin_verifier(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(verifiers.REGISTRY, "has_e", has_vowel_e)
    return "has_e"


def rows(n: int = 6, dataset: str = "gsm8k") -> list[dict[str, Any]]:
    return [
        {
            "messages": [{"role": "user", "content": f"What is {i} plus {i + 1}?"}],
            "ground_truth": str(2 * i + 1),
            "dataset": dataset,
        }
        for i in range(n)
    ]


def write(path: Path, items: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in items))
    return path


def trainer_for(model: Path, items: list[dict[str, Any]], out: Path, **config: Any):
    from cairn.stages.posttrain.chat import inspect_model
    from cairn.stages.posttrain.data import read_examples
    from cairn.stages.posttrain.trainers import build_trainer

    info, tok = inspect_model(model, RLVR, "model")
    data = InputArtifact(write(out / "data.jsonl", items), ArtifactType.RAW, "", name="data.jsonl")
    examples = read_examples(data, RLVR, info.special_tokens)
    cfg = RlvrConfig(**config)
    RLVR.check(examples, cfg, tok)
    recorders = RLVR.recorders(cfg, 0)
    trainer = build_trainer(
        RLVR, cfg, model, info.chat_template, [e.fields for e in examples], out / "hf",
        callbacks=recorders,
    )  # fmt: skip
    for r in recorders:
        r.attach(trainer)
    return trainer, recorders[0]


# --- config and rows -----------------------------------------------------------------------------


def test_config_checks_groups_room_and_verifier_names() -> None:
    with pytest.raises(ValidationError, match="multiple of num_generations"):
        RlvrConfig(global_batch_size=12, num_generations=8)
    with pytest.raises(ValidationError, match="no room for the prompt"):
        RlvrConfig(max_length=32, max_completion_length=32)
    with pytest.raises(ValidationError, match="names 'regex', which is no verifier"):
        RlvrConfig(verifiers={"arith": "regex"})
    config = RlvrConfig(verifiers={"arith": "final_number"})
    assert config.verifier_map()["arith"] == "final_number"
    assert config.verifier_map()["gsm8k"] == verifiers.DEFAULT_DATASETS["gsm8k"]
    assert "verifiers" in config.identity() and "log_every" not in config.identity()


@pytest.mark.parametrize(
    ("row", "field", "fix"),
    [
        ({"messages": [{"role": "user", "content": "2+2?"}], "dataset": "gsm8k"}, "ground_truth",
         "write {"),
        ({"messages": [{"role": "user", "content": "2+2?"}], "ground_truth": "4",
          "dataset": "astrology"}, "dataset", "verifiers: {astrology: final_number}"),
        ({"messages": [{"role": "user", "content": "2+2?"}], "ground_truth": "four",
          "dataset": "gsm8k"}, "ground_truth", "map dataset 'gsm8k' to another verifier"),
        ({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
          "ground_truth": "4", "dataset": "gsm8k"}, "messages[1].role", "end `messages`"),
    ],
)  # fmt: skip
def test_a_bad_row_is_refused_with_file_line_field_and_fix(
    tmp_path: Path, row: dict[str, Any], field: str, fix: str
) -> None:
    data = write(tmp_path / "prompts.jsonl", [*rows(2), row])
    issues = check_data(RlvrConfig(), {"data": [data]})
    assert len(issues) == 1, issues
    issue = issues[0]
    assert (issue.file, issue.line, issue.field) == (str(data), 3, field)
    assert fix in issue.fix


def test_cairn_run_refuses_a_bad_row_before_ray_starts(tmp_path: Path) -> None:
    """`cairn run` validates (reading the data file) before it starts Ray or writes anything."""
    from cairn import load_workflow
    from tests.unit.workflow.test_checks import cairn

    model = make_tiny_model(tmp_path / "base")
    write(tmp_path / "prompts.jsonl", [*rows(3), {**rows(1)[0], "dataset": "trivia"}])
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        "name: rl\nsteps:\n  rl:\n    kind: rlvr\n    inputs:\n"
        f"      model: {model}\n      data: ./prompts.jsonl\n"
    )
    home = tmp_path / "home"
    done = cairn(["run", str(wf)], cwd=tmp_path, home=home)
    out = " ".join((done.stdout + done.stderr).split())  # the terminal wraps long lines
    assert done.returncode != 0
    assert f"{tmp_path / 'prompts.jsonl'}:4: dataset: 'trivia' has no verifier" in out, out
    assert "fix: map it in the step's config, e.g. verifiers: {trivia: final_number}" in out
    assert "Traceback" not in out and "Started a local Ray instance" not in out
    assert not home.exists()  # no database, no MLflow store, no run
    # Mapped in the config, the same file validates.
    wf.write_text(wf.read_text() + "    config:\n      verifiers: {trivia: exact_match}\n")
    assert load_workflow(wf).steps["rl"].kind == "rlvr"


def test_driver_refuses_a_prompt_that_leaves_no_room_for_the_completion(
    tiny_model: Path, tmp_path: Path
) -> None:
    long = {**rows(1)[0], "messages": [{"role": "user", "content": "count " * 60}]}
    with pytest.raises(StageError, match=r"data.jsonl:2: field `messages` is \d+ tokens"):
        trainer_for(tiny_model, [*rows(1), long], tmp_path, max_length=64, max_completion_length=16)


# --- rewards -------------------------------------------------------------------------------------


def test_each_verifier_scores_only_its_own_rows() -> None:
    mapping = {"gsm8k": "final_number", "ifeval": "ifeval"}
    reward = VerifierReward("final_number", mapping)
    scores = reward(
        prompts=[[], [], []],
        completions=[
            [{"role": "assistant", "content": "3 + 4 = 7. The answer is 7."}],
            [{"role": "assistant", "content": "The answer is 8."}],
            [{"role": "assistant", "content": "7"}],
        ],
        ground_truth=["7", "7", '{"func_name": "verify_keywords", "keyword_list": ["7"]}'],
        dataset=["gsm8k", "gsm8k", "ifeval"],
    )
    assert scores == [1.0, 0.0, None]


# --- GRPO ----------------------------------------------------------------------------------------


def test_first_step_has_zero_kl_then_the_policy_moves_and_metrics_are_logged(
    tiny_model: Path, tmp_path: Path, coin_verifier: str
) -> None:
    trainer, rollouts = trainer_for(
        tiny_model,
        rows(8),
        tmp_path,
        max_steps=4,
        global_batch_size=16,
        num_generations=8,
        max_completion_length=8,
        beta=0.05,
        lr=1e-2,
        log_every=1,
        verifiers={"gsm8k": coin_verifier},
    )
    trainer.train()
    logged = [r for r in trainer.state.log_history if "reward" in r]
    # Policy = reference at the first step: the KL term is exactly zero.
    assert logged[0]["kl"] == 0.0
    assert any(r["kl"] > 0 for r in logged[1:]), [r["kl"] for r in logged]
    # Rewards varied within groups, so the loss had a gradient.
    assert all(r["frac_reward_zero_std"] < 1 for r in logged), logged
    assert any(r["grad_norm"] > 0 for r in logged)
    keys = {
        "reward", "reward_std", f"rewards/{coin_verifier}/mean", f"rewards/{coin_verifier}/std",
        "frac_reward_zero_std", "kl", "clip_ratio/region_mean", "completions/mean_length",
        "entropy",
    }  # fmt: skip
    assert all(keys <= set(r) for r in logged), logged[0].keys()
    assert any("tokens_per_s" in r for r in logged[1:])
    # One rollout row per prompt and step, with a reward per completion.
    assert len(rollouts.rows) == 4 * 2
    first = rollouts.rows[0]
    assert first["step"] == 1 and len(first["completions"]) == 8
    assert first["ground_truth"] in {r["ground_truth"] for r in rows(8)}
    scored = first["rewards"][coin_verifier]
    assert scored == [has_vowel_e(c, "", {}) for c in first["completions"]]


# --- resuming --------------------------------------------------------------------------------


def test_a_resumed_run_keeps_its_rollouts_whole(tiny_model: Path, tmp_path: Path) -> None:
    """A checkpoint carries the rollouts so far; a run resumed from it (as a restarted Ray Train
    worker group is, through worker.py) writes every step's rollouts once, with no gap."""
    config = {
        "max_steps": 4, "global_batch_size": 8, "num_generations": 4, "max_completion_length": 6,
        "log_every": 1, "checkpoint_every": 2,
    }  # fmt: skip
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
    first, _ = trainer_for(tiny_model, rows(8), tmp_path / "a", **config)
    first.args.max_steps = 2  # stop after the first checkpoint, as a crash at step 3 would
    first.train()
    checkpoint = tmp_path / "a" / "hf" / "checkpoint-2"
    saved = [json.loads(line) for line in (checkpoint / ROLLOUTS_FILE).read_text().splitlines()]
    assert [r["step"] for r in saved] == [1, 1, 2, 2]

    resumed, rollouts = trainer_for(tiny_model, rows(8), tmp_path / "b", **config)
    rollouts.resume(checkpoint)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    rollouts.export(tmp_path)
    written = [json.loads(line) for line in (tmp_path / ROLLOUTS_FILE).read_text().splitlines()]
    assert [r["step"] for r in written] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert written[:4] == saved
    assert all(len(r["completions"]) == 4 and r["rewards"] for r in written)
    assert SPEC.check_inputs is check_data


def test_vllm_rollouts_without_a_gpu_are_refused_before_training(tmp_path: Path) -> None:
    ctx = local_context(tmp_path, step="rl")
    with pytest.raises(StageError, match="no GPUs; fix: set resources.gpus_per_worker: 1"):
        SPEC.run(RlvrConfig(rollout_engine="vllm"), {}, ctx)
