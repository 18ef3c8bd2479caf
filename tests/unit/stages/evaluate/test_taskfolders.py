"""Tests of task folders written the usual lm-eval way, and of the report's reproduce command.

- a task family sharing an `include:`d base template without a `.yaml` suffix
  (`_default_template_yaml`) that names its data relative to itself;
- a task YAML in a subfolder naming its data relative to its own folder, whose scores the
  report's `lm_eval run` command must reproduce from a copy of the report, elsewhere;
- an `include:` that leaves the tasks folder (`../`, an absolute path, a symbolic link) or names
  a file that is not there: refused, naming the YAML, the include's line and the fix.

The reproduce test runs the stage and then lm-eval's own CLI (a subprocess) on the tiny model of
tests/tiny.py, 4 documents per task; the others only prepare the folder, before any model loads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.evaluate import SPEC, EvaluateConfig, taskdir
from cairn.testing import local_context
from tests.tiny import make_tiny_model
from tests.unit.stages.test_evaluate import CONTEXTS, MC_YAML, write_task

DOCS = [{"context": c, "choices": ["day", "night"], "label": i % 2} for i, c in enumerate(CONTEXTS)]
# lm-eval's convention: the family's shared settings in a template it does not index as a task.
TEMPLATE = MC_YAML.replace("task: tiny_mc\n", "").replace("data/mc.jsonl", "data/family.jsonl")
MEMBER = "include: _default_template_yaml\ntask: {name}\ndoc_to_text: '{prefix} {{{{context}}}}'\n"


def family(folder: Path) -> Path:
    """Two tasks in `family/` over one template there, whose data is `family/data/`."""
    write_task(folder / "family", "_default_template_yaml", TEMPLATE, {"data/family.jsonl": DOCS})
    for name, prefix in (("fam_a", "A:"), ("fam_b", "B:")):
        (folder / "family" / f"{name}.yaml").write_text(MEMBER.format(name=name, prefix=prefix))
    return folder


def nested(folder: Path) -> Path:
    """test_evaluate's task in `nested/`, its data relative to that folder."""
    write_task(folder / "nested", "mc.yaml", MC_YAML, {"data/mc.jsonl": DOCS})
    return folder


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


# --- (a) an included template without the .yaml suffix ------------------------------------------


def test_an_included_template_names_data_relative_to_itself(tmp_path):
    folder = family(tmp_path / "tasks")
    tasks = taskdir.prepare(folder, tmp_path / "scratch", ["fam_a", "fam_b"])
    data = [{"path": "family/data/family.jsonl", "sha256": tasks.files["family/data/family.jsonl"]}]
    assert tasks.data == {"fam_a": data, "fam_b": data}
    assert tasks.leaves["fam_a"] == ["family/fam_a.yaml", "family/_default_template_yaml"]
    assert "family/_default_template_yaml" in tasks.configs
    assert tasks.rewritten == {"family/_default_template_yaml": ["dataset_kwargs.data_files"]}


# --- (b) the reproduce command, run as written elsewhere ----------------------------------------


def test_the_reports_command_reproduces_its_scores_from_a_copy_elsewhere(tmp_path, tiny_model):
    folder = nested(family(tmp_path / "tasks"))
    ctx = local_context(tmp_path / "run")
    given = {
        "model": InputArtifact(tiny_model, ArtifactType.MODEL, "ab" * 32, name="base.model"),
        "tasks": InputArtifact(folder, ArtifactType.RAW, "cd" * 32, name="tasks"),
    }
    config = EvaluateConfig(tasks=["tiny_mc", "fam_a"], limit=4, allow_contaminated=True)
    SPEC.run(config, given, ctx)
    out = ctx.outputs_root / "eval_report"
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["tasks_input"]["rewritten_for_cli"]) == [
        "family/_default_template_yaml",
        "nested/mc.yaml",
    ]

    # What the report says the command needs, laid out in a folder the stage never saw.
    work = tmp_path / "elsewhere"
    shutil.copytree(out / "tasks", work / "tasks")
    needs = report["reproduce"]["needs"]
    assert set(needs) == {"tasks/", "model/"} and report["model"]["digest"] in needs["model/"]
    (work / "model").symlink_to(tiny_model)
    argv = list(report["reproduce"]["argv"])
    assert argv[0] == "lm_eval"
    argv[0] = str(Path(sys.executable).parent / "lm_eval")  # the venv's, as written otherwise
    env = {**os.environ, **report["reproduce"]["env"], "HF_DATASETS_CACHE": str(work / "hf")}
    env.pop("PYTHONPATH", None)  # the CLI needs lm-eval only, not Cairn
    run = subprocess.run(
        argv, cwd=work / "tasks", env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]

    [results] = (work / "tasks" / "lm_eval_out").rglob("results_*.json")
    cli = json.loads(results.read_text())["results"]
    assert sorted(cli) == sorted(report["scores"]) == ["fam_a", "tiny_mc"]
    for task, scores in report["scores"].items():
        for metric, entry in scores.items():
            assert cli[task][f"{metric},{entry['filter']}"] == entry["value"]
            assert cli[task][f"{metric}_stderr,{entry['filter']}"] == entry["stderr"]


# --- (c) includes stay inside the folder --------------------------------------------------------


def include_refusal(tmp_path: Path, include: str, setup=None) -> str:
    folder = family(tmp_path / "tasks")
    (folder / "family" / "fam_a.yaml").write_text(
        f"# the first member\ntask: fam_a\ninclude: {include}\n"
    )
    if setup is not None:
        setup(folder)
    with pytest.raises(StageError) as err:
        taskdir.prepare(folder, tmp_path / "scratch", ["fam_a"])
    message = str(err.value)
    assert message.startswith(f"{folder / 'family' / 'fam_a.yaml'}:3: include: '{include}'")
    assert "fix:" in message and "no task YAML found" not in message
    return message


def test_an_include_outside_the_folder_is_refused_with_the_fix(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "_t_yaml").write_text(TEMPLATE)
    message = include_refusal(tmp_path, "../../shared/_t_yaml")
    assert "points outside the tasks folder" in message
    assert "fix: copy the file into the tasks folder" in message

    message = include_refusal(tmp_path / "abs", str(shared / "_t_yaml"))
    assert "is an absolute path" in message and "`include: _t_yaml`" in message


def test_an_include_through_a_symbolic_link_or_of_a_missing_file_is_refused(tmp_path):
    outside = tmp_path / "outside_template"
    outside.write_text(TEMPLATE)

    def link(folder: Path) -> None:
        (folder / "family" / "_linked_yaml").symlink_to(outside)

    message = include_refusal(tmp_path / "link", "_linked_yaml", link)
    assert "a symbolic link" in message and "replace the link by a copy" in message

    message = include_refusal(tmp_path / "gone", "_missing_yaml")
    assert "family/_missing_yaml does not exist" in message


def test_decontamination_reads_includes_under_the_same_rule(tmp_path):
    """Curate's decontamination reads the same folders: an included template's data is found
    relative to the template, and an include outside the folder is refused there too."""
    from cairn.stages.curate import decontam

    folder = family(tmp_path / "tasks")
    files, _ = decontam.data_files(folder)
    assert list(files) == [folder / "family" / "data" / "family.jsonl"]

    (folder / "family" / "fam_b.yaml").write_text("task: fam_b\ninclude: ../../elsewhere_yaml\n")
    with pytest.raises(StageError) as err:
        decontam.data_files(folder)
    assert str(err.value).startswith(
        f"eval_tasks: {folder / 'family' / 'fam_b.yaml'}:2: include: '../../elsewhere_yaml' "
        "points outside the tasks folder"
    )
