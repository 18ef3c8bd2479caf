"""Tests of the tiny Tülu-3-style data shipped in workflows/data/tulu3 and workflows/evals/tulu3:
every RLVR row can be verified and its intended answer scores 1, the generator reproduces the
shipped bytes, and no held-out eval problem leaks into a training file (checked with curate's
own decontamination index, the check a `curate` step with `eval_tasks` runs).

Reads and regenerates a few MB of JSONL: about two seconds, no model, no Ray.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cairn.stages.curate.decontam import DecontamConfig, EvalIndex
from cairn.stages.rlvr import verifiers

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "workflows" / "data" / "tulu3"
EVALS = REPO / "workflows" / "evals" / "tulu3"
TRAINING = ("corpus", "sft", "dpo", "rlvr")


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def make() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_tulu3", DATA / "make_tulu3.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def built(make: ModuleType) -> dict[str, Any]:
    result: dict[str, Any] = make.build()
    return result


def test_generator_reproduces_the_shipped_files_byte_for_byte(
    make: ModuleType, tmp_path: Path
) -> None:
    make.main(["--data-dir", str(tmp_path / "data"), "--evals-dir", str(tmp_path / "evals")])
    for name in TRAINING:
        assert (tmp_path / "data" / f"{name}.jsonl").read_bytes() == (
            DATA / f"{name}.jsonl"
        ).read_bytes(), name
    assert (tmp_path / "evals" / "arith.jsonl").read_bytes() == (EVALS / "arith.jsonl").read_bytes()
    total = sum(p.stat().st_size for p in [*DATA.iterdir(), *EVALS.iterdir()])
    assert total < 4_000_000  # the repository ships these


def test_every_rlvr_row_is_verifiable_and_its_intended_answer_scores_one(
    built: dict[str, Any],
) -> None:
    rows = read(DATA / "rlvr.jsonl")
    assert rows == built["rlvr"]
    assert len(built["intended"]) == len(rows)
    kinds = [row["dataset"] for row in rows]
    assert 300 <= len(rows) <= 600
    assert 0.2 <= kinds.count("ifeval") / len(rows) <= 0.3
    assert set(kinds) == {"gsm8k", "ifeval"}
    for line, (row, reply) in enumerate(zip(rows, built["intended"], strict=True), start=1):
        assert set(row) == {"messages", "ground_truth", "dataset"}, line
        assert [m["role"] for m in row["messages"]] == ["user"], line
        name = verifiers.DEFAULT_DATASETS[row["dataset"]]
        truth = row["ground_truth"]
        assert verifiers.problem(name, truth, row) is None, f"rlvr.jsonl:{line}"
        assert verifiers.get(name)(reply, truth, row) == 1.0, f"rlvr.jsonl:{line}: {reply!r}"
        if row["dataset"] == "gsm8k":
            check_arithmetic(row["messages"][0]["content"], reply, truth, line)
            wrong = reply.replace(f"is {truth}.", f"is {int(truth) + 1}.")
            assert verifiers.get(name)(wrong, truth, row) == 0.0, line


def check_arithmetic(question: str, reply: str, truth: str, line: int) -> None:
    """Recompute the answer from the question: its two numbers, in order, with the reply's
    operation (subtractions take the smaller number from the larger)."""
    a, b = (int(n) for n in re.findall(r"\d+", question))
    match = re.fullmatch(
        r"(Add|Subtract): (\d+) ([+-]) (\d+) = (\d+)\. The answer is (\d+)\.", reply
    )
    assert match, (line, reply)
    assert match[1] == {"+": "Add", "-": "Subtract"}[match[3]], line
    assert (int(match[2]), int(match[4])) == (a, b), line
    expected = a + b if match[3] == "+" else a - b
    assert expected >= 0 and int(truth) == expected == int(match[5]) == int(match[6]), line
    taking = ("gives", "lost", "takes", "sold", "uses", "took")  # the subtraction templates' verbs
    assert any(verb in question for verb in taking) == (match[3] == "-"), (line, question)


def test_instruction_pairs_chosen_meets_the_constraint_and_rejected_breaks_it(
    built: dict[str, Any],
) -> None:
    rows = read(DATA / "dpo.jsonl")
    assert rows == built["dpo"]
    constrained = [
        (row, c) for row, c in zip(rows, built["dpo_constraints"], strict=True) if c is not None
    ]
    assert 0.1 <= len(constrained) / len(rows) <= 0.3
    for row, constraint in constrained:
        truth = json.dumps(constraint)
        assert verifiers.problem("ifeval", truth, row) is None
        assert verifiers.ifeval(row["chosen"], truth, row) == 1.0, row
        assert verifiers.ifeval(row["rejected"], truth, row) == 0.0, row
    for row in rows:
        assert row["chosen"] != row["rejected"]
        assert [m["role"] for m in row["prompt"]] == ["user"]


def test_sft_rows_are_chats_with_a_fifth_instruction_following(built: dict[str, Any]) -> None:
    rows = read(DATA / "sft.jsonl")
    assert rows == built["sft"] and 400 <= len(rows) <= 800
    arithmetic = 0
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        reply = row["messages"][1]["content"]
        form = r"(Add|Subtract): \d+ [+-] \d+ = \d+\. The answer is \d+\."
        arithmetic += bool(re.fullmatch(form, reply))
    assert 0.7 <= arithmetic / len(rows) <= 0.9


def training_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in training_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in training_strings(v)]
    return []


def test_no_eval_problem_occurs_in_any_training_file() -> None:
    index = EvalIndex.build([("tulu3", EVALS)], DecontamConfig())
    evals = read(EVALS / "arith.jsonl")
    assert index.items == len(evals) >= 100
    # The check can fail: a training text holding an eval question is caught.
    assert index.matches(f"Some text. {evals[0]['question']} More text.")
    questions = [row["question"] for row in evals]
    for name in TRAINING:
        for line, row in enumerate(read(DATA / f"{name}.jsonl"), start=1):
            for text in training_strings(row):
                assert not index.matches(text), f"{name}.jsonl:{line}: {index.matches(text)}"
                assert not any(q in text for q in questions), f"{name}.jsonl:{line}"
