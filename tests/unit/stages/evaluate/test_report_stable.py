"""Tests that the same evaluation writes the same eval report, byte for byte.

The report's digest is the sha256 of its files, so a value that changes between two runs of the
same evaluation (a function's memory address, the time taken, the run's scratch folder, where the
model or the task folder lay) gives identical evaluations different digests. Here one tiny model
(tests/tiny.py) is evaluated twice, from different folders, on a task whose config holds a
Python function, and the two reports must be the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.evaluate import SPEC, EvaluateConfig
from cairn.testing import local_context
from tests.tiny import make_tiny_model
from tests.unit.stages.test_evaluate import CONTEXTS, MC_YAML, write_task

# test_evaluate's multiple-choice task in a subfolder, with a `!function` lm-eval keeps as a
# function object in the config it reports (fewshot_config.process_docs).
CODE_YAML = MC_YAML.replace(
    "output_type:", "process_docs: !function utils.process_docs\noutput_type:"
)
UTILS = "def process_docs(dataset):\n    return dataset\n"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def task_folder(parent: Path) -> Path:
    folder = parent / "my_tasks"
    docs = [
        {"context": c, "choices": ["day", "night"], "label": i % 2} for i, c in enumerate(CONTEXTS)
    ]
    write_task(folder / "nested", "mc.yaml", CODE_YAML, {"data/mc.jsonl": docs})
    (folder / "nested" / "utils.py").write_text(UTILS)
    return folder


def evaluate(root: Path, model: Path, tasks: Path) -> Path:
    ctx = local_context(root)
    given = {
        "model": InputArtifact(model, ArtifactType.MODEL, "ab" * 32, name="base.model"),
        "tasks": InputArtifact(tasks, ArtifactType.RAW, "cd" * 32, name=tasks.name),
    }
    config = EvaluateConfig(
        tasks=["tiny_mc"], limit=4, allow_contaminated=True, trust_task_code=True
    )
    SPEC.run(config, given, ctx)
    ctx.flush()
    return ctx.outputs_root / "eval_report"


def files(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def test_two_identical_evaluations_write_the_same_report(tmp_path, tiny_model):
    # The same model and task folder, copied elsewhere; each run in a scratch folder of its own.
    model_copy = tmp_path / "copy" / "tiny"
    shutil.copytree(tiny_model, model_copy)
    first = evaluate(tmp_path / "run1", tiny_model, task_folder(tmp_path / "a"))
    second = evaluate(tmp_path / "run2", model_copy, task_folder(tmp_path / "b"))

    text = (first / "report.json").read_text()
    assert (first / "report.json").read_bytes() == (second / "report.json").read_bytes()
    assert files(first) == files(second)  # samples/ and tasks/ too: the whole artifact
    assert "0x" not in text  # no memory address (`<function process_docs at 0x7f...>`)
    for path in (tmp_path, tiny_model):
        assert str(path) not in text
    assert "elapsed" not in text

    # The function lm-eval reported as an object is named by its file in the task folder and
    # that file's sha256.
    report = json.loads(text)
    fewshot = report["tasks"]["tiny_mc"]["config"]["fewshot_config"]
    assert fewshot["process_docs"] == {
        "function": "nested/utils.py:process_docs",
        "sha256": hashlib.sha256(UTILS.encode()).hexdigest(),
    }
    assert report["task_code"]["python_files"] == [
        {"path": "nested/utils.py", "sha256": hashlib.sha256(UTILS.encode()).hexdigest()}
    ]
    assert report["contamination"]["external_models"] == ["base.model"]


def test_functions_and_objects_are_written_without_addresses(tmp_path):
    """Whatever callable lm-eval leaves in its results: named by where its code lives."""
    import functools

    import numpy as np
    from lm_eval.api import metrics

    from cairn.stages.evaluate import stable

    root = tmp_path / "copy"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "utils.py").write_text("def f(x, y=0):\n    return x\n")
    namespace: dict = {}
    code = compile((root / "sub" / "utils.py").read_text(), str(root / "sub" / "utils.py"), "exec")
    exec(code, namespace)
    files = {"sub/utils.py": "f" * 64}

    def dumps(value: object) -> str:
        return json.dumps(value, default=lambda v: stable.jsonable(v, root, files))

    assert json.loads(dumps(namespace["f"])) == {"function": "sub/utils.py:f", "sha256": "f" * 64}
    installed = json.loads(dumps(metrics.mean))
    assert installed["function"] == "lm_eval.api.metrics:mean"
    assert installed["sha256"] == hashlib.sha256(Path(metrics.__file__).read_bytes()).hexdigest()
    bound = json.loads(dumps(functools.partial(namespace["f"], 1, y=2)))
    assert bound == {
        "function": "sub/utils.py:f",
        "sha256": "f" * 64,
        "args": [1],
        "keywords": {"y": 2},
    }
    assert json.loads(dumps(len)) == {"function": "builtins:len", "sha256": None}
    assert json.loads(dumps({np.float32(0.5), 2})) == [0.5, 2]

    class Opaque:
        pass

    text = dumps([Opaque(), lambda x: x, stable.REPR.sub(r"<\1>", f"{print!r} {Opaque()!r}")])
    assert "0x" not in text and "Opaque object" in text and "<lambda>" in text
