"""Tests that an evaluate task folder never runs code the step did not trust.

A `!function` names Python lm-eval would import from the folder: refused before anything runs
unless the step sets `trust_task_code: true` (then the report records the files and their
sha256); a Jinja template that reaches for Python is refused by the sandbox; a malformed or
hostile task YAML is named with its line instead of being skipped. The payloads create a marker
file when run, and every test checks it is absent. The whole stage runs (with lm-eval) where the
test needs it, on the tiny model of tests/tiny.py; the rest calls the preparation directly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.evaluate import SPEC, EvaluateConfig, harness, taskcode, taskdir, taskyaml
from cairn.testing import local_context
from tests.tiny import make_tiny_model
from tests.unit.stages.test_evaluate import MC_YAML as EVALUATE_MC_YAML

FIX = "fix: set trust_task_code: true on this evaluate step if you trust this folder's Python"
CONTEXTS = ["Now is the winter of our discontent", "If music be the food of love,"]
# test_evaluate's multiple-choice task, its data file beside the YAML.
MC_YAML = EVALUATE_MC_YAML.replace("data/mc.jsonl", "mc.jsonl")
# Line 7 of the YAML below: what the refusal must point at.
CODE_YAML = MC_YAML.replace("task: tiny_mc", "task: tiny_code").replace(
    "output_type:", "process_docs: !function utils.process_docs\noutput_type:"
)


def payload(marker: Path) -> str:
    """A utils.py whose import creates `marker`, as a real attack would run anything."""
    return (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).touch()\n\n"
        "def process_docs(dataset):\n"
        "    return dataset\n"
    )


def folder_with(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    docs = [
        {"context": c, "choices": ["day", "night"], "label": i % 2} for i, c in enumerate(CONTEXTS)
    ]
    (root / "mc.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def prepare(folder: Path, tmp_path: Path, names: list[str]) -> taskdir.TaskDir:
    return taskdir.prepare(folder, tmp_path / "scratch", names)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def run_stage(tmp_path: Path, model: Path, folder: Path, **config):
    ctx = local_context(tmp_path / "run")
    given = {
        "model": InputArtifact(model, ArtifactType.MODEL, "ab" * 32, name="model.model"),
        "tasks": InputArtifact(folder, ArtifactType.RAW, "cd" * 32, name=folder.name),
    }
    config = {"allow_contaminated": True, **config}
    result = SPEC.run(EvaluateConfig(**config), given, ctx)
    ctx.flush()
    return result["eval_report"], ctx.outputs_root / "eval_report", ctx.reporter.drain()


# --- !function ----------------------------------------------------------------------------------


def test_python_a_task_names_is_refused_without_trust(tmp_path, tiny_model):
    marker = tmp_path / "payload-ran"
    folder = folder_with(tmp_path / "tasks", {"code.yaml": CODE_YAML, "utils.py": payload(marker)})
    with pytest.raises(StageError) as err:
        run_stage(tmp_path, tiny_model, folder, tasks=["tiny_code"], limit=2)
    message = str(err.value)
    assert f"{folder}/code.yaml:7: !function utils.process_docs (runs {folder}/utils.py)" in message
    assert FIX in message
    assert not marker.exists()
    assert not (tmp_path / "run" / "outputs" / "eval_report" / "report.json").exists()


def test_trusted_python_runs_and_the_report_records_it(tmp_path, tiny_model):
    marker = tmp_path / "payload-ran"
    utils = payload(marker)
    folder = folder_with(tmp_path / "tasks", {"code.yaml": CODE_YAML, "utils.py": utils})
    meta, out, records = run_stage(
        tmp_path, tiny_model, folder, tasks=["tiny_code"], limit=2, trust_task_code=True
    )
    assert marker.exists()  # lm-eval ran the folder's Python, as the step allowed
    digest = hashlib.sha256(utils.encode()).hexdigest()
    report = json.loads((out / "report.json").read_text())
    assert report["task_code"] == {
        "trust_task_code": True,
        "python_files": [{"path": "utils.py", "sha256": digest}],
        "functions": [
            {"yaml": "code.yaml", "line": 7, "function": "utils.process_docs", "file": "utils.py"}
        ],
    }
    assert report["settings"]["trust_task_code"] is True
    # The release reads these from the artifact's metadata.
    assert meta["trust_task_code"] is True
    assert meta["task_code"] == [{"path": "utils.py", "sha256": digest}]
    logs = [r["message"] for r in records if r["type"] == "log"]
    assert "evaluate: trust_task_code is true: lm-eval runs the tasks' Python (utils.py)" in logs


def test_trust_task_code_is_part_of_the_step_identity():
    plain = EvaluateConfig(tasks=["x"])
    assert plain.trust_task_code is False
    assert plain.identity() != EvaluateConfig(tasks=["x"], trust_task_code=True).identity()


def test_python_in_an_included_yaml_or_a_group_is_found_where_it_is_written(tmp_path):
    marker = tmp_path / "payload-ran"
    base = "process_docs: !function helpers.clean.process_docs\n"
    folder = folder_with(
        tmp_path / "tasks",
        {
            "base/_base.yaml": base,
            "base/helpers/clean.py": payload(marker),
            "inc.yaml": MC_YAML.replace("tiny_mc", "tiny_inc") + "include: base/_base.yaml\n",
            "group.yaml": (
                "group: grp\ntask:\n  - task: inline_mc\n    dataset_path: json\n"
                "    dataset_kwargs: {data_files: {test: mc.jsonl}}\n"
                "    doc_to_text: !function utils.text\n"
            ),
            "plain.yaml": MC_YAML,
        },
    )
    tasks = prepare(folder, tmp_path, ["tiny_inc", "grp", "tiny_mc"])
    found = taskcode.found(tasks)
    assert [(f["yaml"], f["line"], f["function"], f["file"]) for f in found] == [
        ("base/_base.yaml", 1, "helpers.clean.process_docs", "base/helpers/clean.py"),
        ("group.yaml", 6, "utils.text", None),  # no utils.py: an installed module's name
    ]
    with pytest.raises(StageError) as err:
        taskcode.check(False, tasks)
    assert f"{folder}/base/_base.yaml:1: !function helpers.clean.process_docs" in str(err.value)
    assert f"{folder}/group.yaml:6: !function utils.text\n" in str(err.value)
    assert not marker.exists()


def test_python_of_a_task_not_asked_for_is_not_refused(tmp_path):
    folder = folder_with(
        tmp_path / "tasks", {"plain.yaml": MC_YAML, "code.yaml": CODE_YAML, "utils.py": "x = 1\n"}
    )
    tasks = prepare(folder, tmp_path, ["tiny_mc"])
    assert taskcode.check(False, tasks) == {
        "trust_task_code": False,
        "python_files": [],
        "functions": [],
    }


# --- templates ----------------------------------------------------------------------------------

ESCAPE = "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}"


def test_templates_render_in_the_sandbox(tmp_path):
    import lm_eval.utils
    from jinja2.exceptions import SecurityError

    harness.sandbox_templates()
    harness.sandbox_templates()  # once per process: a second call changes nothing
    assert (
        lm_eval.utils.apply_template(
            "{{context|upper}}: {{ choices[1] }}", {"context": "day", "choices": ["a", "b"]}
        )
        == "DAY: b"
    )
    assert lm_eval.utils.apply_template("{{ 'x' | regex_replace('x', 'y') }}", {}) == "y"
    marker = tmp_path / "payload-ran"
    with pytest.raises(SecurityError):
        lm_eval.utils.apply_template(ESCAPE.replace("MARKER", str(marker)), {})
    assert not marker.exists()


def test_a_template_that_reaches_for_python_is_a_stage_error(tmp_path, tiny_model):
    marker = tmp_path / "payload-ran"
    escape = ESCAPE.replace("MARKER", str(marker)).replace("'", "''")
    text = MC_YAML.replace('doc_to_text: "{{context}}"', f"doc_to_text: '{escape}'")
    folder = folder_with(tmp_path / "tasks", {"mc.yaml": text})
    with pytest.raises(StageError) as err:
        run_stage(tmp_path, tiny_model, folder, tasks=["tiny_mc"], limit=2)
    message = str(err.value)
    assert "a Jinja template in the tasks input reaches for Python objects" in message
    assert "fix: use the doc's fields and Jinja filters" in message
    assert not marker.exists()


# --- malformed and hostile YAML -----------------------------------------------------------------


def test_a_malformed_task_yaml_is_named_with_its_line_not_skipped(tmp_path):
    broken = MC_YAML.replace("test_split: test", "test_split: [test")
    folder = folder_with(tmp_path / "tasks", {"mc.yaml": broken})
    with pytest.raises(StageError) as err:
        prepare(folder, tmp_path, ["tiny_mc"])
    message = str(err.value)
    assert message.startswith(f"{folder}/mc.yaml:7: not valid YAML: ")
    assert "no task YAML found" not in message
    assert "fix: correct the YAML there, or remove the file from the task folder" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- task: a\n- task: b\n", "holds a list, not a task config"),
        ("", "holds nothing, not a task config"),
        ("task: x\ndoc: !!python/object/apply:os.system ['true']\n", ":2: not valid YAML: "),
        (b"task: caf\xe9\n", "not UTF-8 text (byte 9"),
        ("a: &a [*a]\n", ":1: an alias refers to the node that contains it"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_an_unreadable_task_yaml_is_a_stage_error(tmp_path, text, expected):
    folder = folder_with(tmp_path / "tasks", {"plain.yaml": MC_YAML})
    (folder / "odd.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(StageError) as err:
        prepare(folder, tmp_path, ["tiny_mc"])
    assert str(err.value).startswith(f"{folder}/odd.yaml")
    assert expected in str(err.value) and "fix:" in str(err.value)


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")  # ~700 bytes standing for 10^10 values
    with pytest.raises(StageError, match=r"bomb\.yaml: its aliases expand to more than 100,000"):
        taskyaml.parse(path)
