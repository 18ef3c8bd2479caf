"""Tests that decontamination reads an evaluate task folder's YAMLs as data, never as code.

Curate reads the same task folders as the evaluate stage (evaluate/taskfolder.py) before any
model exists: a `!function` there is only text (its Python file is never imported, whatever the
evaluate step's trust_task_code says), and a malformed or hostile YAML fails with the file, the
line and a fix, as it does in evaluate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.errors import StageError
from cairn.stages.curate.decontam import DecontamConfig, EvalIndex

QA_YAML = """task: qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: qa.jsonl
test_split: test
process_docs: !function utils.process_docs
doc_to_text: !function utils.doc_to_text
doc_to_target: "{{answer}}"
"""
QUESTION = "Which river did the legions cross on the morning the senate fell silent?"


def folder(tmp_path: Path, marker: Path) -> Path:
    root = tmp_path / "evals"
    root.mkdir()
    (root / "qa.yaml").write_text(QA_YAML)
    (root / "qa.jsonl").write_text(json.dumps({"question": QUESTION, "answer": "Rubicon"}) + "\n")
    (root / "utils.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "def process_docs(ds):\n    return ds\n"
        "def doc_to_text(doc):\n    return doc['question']\n"
    )
    return root


def test_function_tags_are_read_as_text_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    root = folder(tmp_path, marker)
    index = EvalIndex.build([("./evals", root)], DecontamConfig())
    assert index.yamls == {"./evals": ["qa.yaml"]}
    assert "./evals/qa.jsonl" in index.files
    # doc_to_text is Python, so the item is the row's every string (the question included).
    assert index.matches(f"From a chronicle: {QUESTION} Nobody knows.") == ["./evals/qa.jsonl:1"]
    assert not marker.exists()


def test_a_malformed_task_yaml_names_the_file_the_line_and_a_fix(tmp_path):
    root = folder(tmp_path, tmp_path / "payload-ran")
    (root / "qa.yaml").write_text(QA_YAML.replace("test_split: test", "test_split: 'test"))
    with pytest.raises(StageError) as err:
        EvalIndex.build([("./evals", root)], DecontamConfig())
    message = str(err.value)
    assert message.startswith(f"eval_tasks: {root}/qa.yaml:")
    assert "not valid YAML: " in message and "while scanning a quoted scalar" in message
    assert "fix: correct the YAML there, or remove the file from the task folder" in message


def test_an_alias_bomb_in_a_task_yaml_is_refused(tmp_path):
    root = folder(tmp_path, tmp_path / "payload-ran")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    (root / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(StageError, match=r"eval_tasks: .*bomb\.yaml: its aliases expand"):
        EvalIndex.build([("./evals", root)], DecontamConfig())
