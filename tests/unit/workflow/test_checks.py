"""Tests of workflow validation (`cairn.workflow`): every malformed file is rejected precisely.

A person reading a validation error is about to edit the file, so each case below checks the
issue's field, its line, what it says and what it tells them to do, not only that loading failed.
Validation must also be pure: a bad file run or validated from the command line leaves nothing
behind (no database, no store, no MLflow files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.errors import SpecError, SpecIssue
from cairn.workflow import Workflow, load_workflow
from tests import REPO

QUICKSTART = REPO / "workflows" / "quickstart.yaml"

# The smallest valid workflow. Its lines are 1-6; text appended to it starts at line 7.
CORPUS = """\
name: t
steps:
  corpus:
    kind: curate
    inputs:
      sources: [./data.jsonl]
"""
# A pretrain step on the corpus; after CORPUS it takes lines 7-10 (so `config:` goes on line 11).
MODEL = """\
  model:
    kind: pretrain
    inputs:
      dataset: corpus.dataset
"""


@dataclass(frozen=True)
class Bad:
    """A malformed workflow and the issue it must produce (`n`: how many issues in all)."""

    id: str
    text: str
    field: str
    line: int | None
    message: str
    fix: str
    n: int = 1


CASES = [
    # --- the file itself -------------------------------------------------------------------
    Bad(
        "yaml-syntax",
        "name: t\nsteps:\n  a: [1, 2\n  b: 3\n",
        "(syntax)",
        4,
        "not valid YAML",
        "indentation or quoting",
    ),
    Bad("yaml-tab", "name: t\nsteps:\n\tcorpus: 1\n", "(syntax)", 3, "'\\t'", "indentation"),
    Bad("top-level-list", "- a\n- b\n", "(top level)", 1, "must be a mapping", "name: my-workflow"),
    Bad("empty-file", "", "(top level)", None, "must be a mapping", "`steps:` mapping"),
    # --- top-level fields ----------------------------------------------------------------
    Bad(
        "missing-name",
        CORPUS.replace("name: t\n", ""),
        "name",
        1,
        "required field is missing",
        "add `name:`",
    ),
    Bad(
        "bad-name",
        CORPUS.replace("name: t", "name: My Flow"),
        "name",
        1,
        "should match pattern",
        "lowercase letters",
    ),
    Bad("missing-steps", "name: t\n", "steps", 1, "required field is missing", "add `steps:`"),
    Bad(
        "empty-steps",
        "name: t\nsteps: {}\n",
        "steps",
        2,
        "at least 1 item",
        "at least one entry under `steps:`",
    ),
    Bad(
        "typo-steps",  # also reports the missing `steps`
        CORPUS.replace("steps:", "stpes:"),
        "stpes",
        2,
        "unknown field",
        "did you mean 'steps'?",
        n=2,
    ),
    Bad(
        "unknown-top-level",
        CORPUS + "owner: me\n",
        "owner",
        7,
        "unknown field",
        "known fields: name, version, description, steps",
    ),
    Bad(
        "duplicate-step",
        CORPUS + CORPUS.split("steps:\n", 1)[1],
        "steps.corpus",
        7,
        "'corpus' is given twice (lines 3 and 7)",
        "rename or remove one",
    ),
    # --- step fields -----------------------------------------------------------------------
    Bad(
        "step-name-uppercase",
        CORPUS.replace("  corpus:", "  Corpus:"),
        "steps.Corpus",
        3,
        "step name 'Corpus' is not allowed",
        "lowercase letters",
    ),
    Bad(
        "step-not-mapping",
        "name: t\nsteps:\n  corpus: curate\n",
        "steps.corpus",
        3,
        "must be a mapping",
        "kind, inputs, config",
    ),
    Bad(
        "unknown-step-field",
        CORPUS + "    retry: 2\n",
        "steps.corpus.retry",
        7,
        "unknown field",
        "did you mean 'retries'?",
    ),
    Bad(
        "missing-kind",
        CORPUS.replace("    kind: curate\n", ""),
        "steps.corpus.kind",
        3,
        "required field is missing",
        "add `kind:`",
    ),
    Bad(
        "unknown-kind-typo",
        CORPUS + MODEL.replace("kind: pretrain", "kind: pretrian"),
        "steps.model.kind",
        8,
        "unknown stage kind 'pretrian'",
        "did you mean 'pretrain'?",
    ),
    Bad(
        "unknown-kind",
        CORPUS.replace("kind: curate", "kind: tokenize"),
        "steps.corpus.kind",
        4,
        "unknown stage kind 'tokenize'",
        "use one of: curate, pretrain",
    ),
    Bad(
        "retries-too-many",
        CORPUS + "    retries: 11\n",
        "steps.corpus.retries",
        7,
        "less than or equal to 10",
        "<= 10",
    ),
    Bad(
        "retries-negative",
        CORPUS + "    retries: -1\n",
        "steps.corpus.retries",
        7,
        "greater than or equal to 0",
        ">= 0",
    ),
    Bad(
        "cache-not-bool",
        CORPUS + "    cache: sometimes\n",
        "steps.corpus.cache",
        7,
        "valid boolean",
        "true or false",
    ),
    # --- config, checked against the kind's own model --------------------------------------
    Bad(
        "config-typo",
        CORPUS + MODEL + "    config:\n      hiden_size: 64\n",
        "steps.model.config.hiden_size",
        12,
        "unknown field",
        "did you mean 'hidden_size'?",
    ),
    Bad(
        "config-type",
        CORPUS + "    config:\n      vocab_size: lots\n",
        "steps.corpus.config.vocab_size",
        8,
        "valid integer",
        "vocabulary",
    ),
    Bad(
        "config-range",
        CORPUS + "    config:\n      vocab_size: 10\n",
        "steps.corpus.config.vocab_size",
        8,
        "greater than or equal to 263",
        ">= 263",
    ),
    Bad(
        "config-choice",
        CORPUS + "    config:\n      split_text_files: sentence\n",
        "steps.corpus.config.split_text_files",
        8,
        "'document' or 'paragraph'",
        "plain-text sources",
    ),
    Bad(
        "config-max-below-min",
        CORPUS + "    config:\n      min_chars: 10\n      max_chars: 5\n",
        "steps.corpus.config",
        7,
        "max_chars (5) is below min_chars (10)",
        "fields named in the message",
    ),
    Bad(
        "head-dim",
        CORPUS + MODEL + "    config:\n      hidden_size: 96\n      num_heads: 4\n",
        "steps.model.config",
        11,
        "head_dim = hidden_size / num_heads = 24 is not one of",
        "set num_heads: 3",
    ),
    Bad(
        "warmup-beyond-steps",
        CORPUS + MODEL + "    config:\n      max_steps: 10\n      warmup_steps: 20\n",
        "steps.model.config",
        11,
        "warmup_steps (20) exceeds max_steps (10)",
        "lower warmup_steps",
    ),
    # --- resources -------------------------------------------------------------------------
    Bad(
        "resources-not-mapping",
        CORPUS + "    resources: 4\n",
        "steps.corpus.resources",
        7,
        "must be a mapping",
        "indent its fields",
    ),
    Bad(
        "resources-negative-workers",
        CORPUS + "    resources:\n      num_workers: -1\n",
        "steps.corpus.resources.num_workers",
        8,
        "greater than or equal to 1",
        ">= 1",
    ),
    Bad(
        "resources-unknown-field",
        CORPUS + "    resources:\n      num_worker: 2\n",
        "steps.corpus.resources.num_worker",
        8,
        "unknown field",
        "did you mean 'num_workers'?",
    ),
    Bad(
        "resources-bad-type",
        CORPUS + "    resources:\n      gpus_per_worker: many\n",
        "steps.corpus.resources.gpus_per_worker",
        8,
        "valid number",
        "valid value",
    ),
    # --- inputs: slots -----------------------------------------------------------------------
    Bad(
        "unknown-input-slot",
        CORPUS.replace("sources:", "source:"),
        "steps.corpus.inputs.source",
        6,
        "kind 'curate' has no input 'source'",
        "did you mean 'sources'?",
        n=2,  # and so `sources` is missing
    ),
    Bad(
        "missing-input",
        "name: t\nsteps:\n  corpus:\n    kind: curate\n",
        "steps.corpus.inputs",
        3,
        "missing input 'sources' (raw)",
        "add `sources:",
    ),
    Bad(
        "list-for-single-input",
        CORPUS + MODEL.replace("dataset: corpus.dataset", "dataset: [corpus.dataset]"),
        "steps.model.inputs.dataset",
        10,
        "takes one reference, got a list",
        "single `step.output`",
    ),
    Bad(
        "empty-input-list",
        CORPUS.replace("[./data.jsonl]", "[]"),
        "steps.corpus.inputs.sources",
        6,
        "empty list",
        "at least one reference",
    ),
    Bad(
        "input-not-text",
        CORPUS.replace("[./data.jsonl]", "5"),
        "steps.corpus.inputs.sources",
        6,
        "not 5",
        "<step>.<output>",
    ),
    # --- inputs: references to steps ----------------------------------------------------------
    Bad(
        "unknown-step-typo",
        CORPUS + MODEL.replace("corpus.dataset", "corpsu.dataset"),
        "steps.model.inputs.dataset",
        10,
        "unknown step 'corpsu' in 'corpsu.dataset'",
        "did you mean 'corpus'?",
    ),
    Bad(
        "unknown-step",
        CORPUS + MODEL.replace("corpus.dataset", "zzz.dataset"),
        "steps.model.inputs.dataset",
        10,
        "unknown step 'zzz'",
        "steps are: corpus, model",
    ),
    Bad(
        "unknown-output",
        CORPUS + MODEL.replace("corpus.dataset", "corpus.datset"),
        "steps.model.inputs.dataset",
        10,
        "step 'corpus' (curate) has no output 'datset'",
        "did you mean 'dataset'?",
    ),
    Bad(
        "self-reference",
        "name: t\nsteps:\n" + MODEL.replace("corpus.dataset", "model.model"),
        "steps.model.inputs.dataset",
        6,
        "step 'model' takes its own output as input",
        "earlier step",
    ),
    Bad(
        "cycle-of-two",  # plus the two type mismatches a cycle here cannot avoid
        "name: t\nsteps:\n"
        "  a:\n    kind: pretrain\n    inputs:\n      dataset: b.dataset\n"
        "  b:\n    kind: curate\n    inputs:\n      sources: [a.model]\n",
        "steps.a.inputs",
        5,
        "cycle: a → b → a",
        "do not depend on it",
        n=2,
    ),
    Bad(
        "cycle-of-three",
        "name: t\nsteps:\n"
        "  a:\n    kind: pretrain\n    inputs:\n      dataset: c.dataset\n"
        "  b:\n    kind: pretrain\n    inputs:\n      dataset: a.dataset\n"
        "  c:\n    kind: curate\n    inputs:\n      sources: [b.model]\n",
        "steps.a.inputs",
        5,
        "cycle: a → c → b → a",
        "do not depend on it",
        n=3,
    ),
    Bad(
        "model-where-dataset-expected",
        CORPUS
        + MODEL
        + MODEL.replace("model:", "model2:").replace("corpus.dataset", "model.model"),
        "steps.model2.inputs.dataset",
        14,
        "'model.model' is a model, but this input needs a dataset",
        "a step that makes a dataset",
    ),
    Bad(
        "step-output-where-raw-expected",
        CORPUS + "  again:\n    kind: curate\n    inputs:\n      sources: [corpus.dataset]\n",
        "steps.again.inputs.sources.0",
        10,
        "'corpus.dataset' is a dataset, but this input needs a raw",
        "path to the raw data files",
    ),
    Bad(
        "neither-path-nor-reference",
        CORPUS.replace("./data.jsonl", "just words"),
        "steps.corpus.inputs.sources.0",
        6,
        "'just words' is neither `step.output` nor a path",
        "<step>.<output>",
    ),
    # --- inputs: external sources --------------------------------------------------------------
    Bad(
        "missing-path",
        CORPUS.replace("./data.jsonl", "./nope.jsonl"),
        "steps.corpus.inputs.sources.0",
        6,
        "source './nope.jsonl' does not exist",
        "relative to the workflow file",
    ),
    Bad(
        "missing-file-uri",
        CORPUS.replace("./data.jsonl", "file:///nonexistent/cairn/x.jsonl"),
        "steps.corpus.inputs.sources.0",
        6,
        "does not exist (looked for /nonexistent/cairn/x.jsonl)",
        "fix the path",
    ),
    Bad(
        "raw-where-dataset-expected",
        "name: t\nsteps:\n" + MODEL.replace("corpus.dataset", "./data.jsonl"),
        "steps.model.inputs.dataset",
        6,
        "'./data.jsonl' is raw data, but this input needs a dataset",
        "produce the dataset with a step",
    ),
    Bad(
        "uri-where-dataset-expected",
        "name: t\nsteps:\n" + MODEL.replace("corpus.dataset", "s3://bucket/ds"),
        "steps.model.inputs.dataset",
        6,
        "an external source cannot be a dataset",
        "produce it with a step",
    ),
    Bad(
        "hf-model-where-raw-expected",
        CORPUS.replace("./data.jsonl", "./hf-model"),
        "steps.corpus.inputs.sources.0",
        6,
        "'./hf-model' is a Hugging Face model directory, but this input needs a raw",
        "raw data files",
    ),
]


def sources(folder: Path) -> Path:
    """`folder` with the external sources the cases refer to: raw data and an HF model dir."""
    (folder / "data.jsonl").write_text('{"text": "To be, or not to be."}\n')
    (folder / "hf-model").mkdir()
    (folder / "hf-model" / "config.json").write_text('{"model_type": "llama"}')
    return folder


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return sources(tmp_path)


def reject(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_workflow(path)
    return info.value


def assert_well_formed(err: SpecError, path: Path) -> None:
    """Every issue names this file and says what to do; the printed error names the file."""
    assert err.issues
    assert str(path) in str(err)
    for issue in err.issues:
        assert isinstance(issue, SpecIssue)
        assert issue.file == str(path)
        assert issue.fix.strip(), f"issue without a fix: {issue}"
        assert issue.message.strip()


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_workflow_is_rejected_precisely(case: Bad, workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_text(case.text)
    err = reject(path)
    assert_well_formed(err, path)
    shown = "\n".join(map(str, err.issues))
    assert len(err.issues) == case.n, shown
    hits = [i for i in err.issues if i.field == case.field and case.message in i.message]
    assert hits, f"no issue on {case.field!r} saying {case.message!r}; got:\n{shown}"
    issue = hits[0]
    assert issue.line == case.line, shown
    assert case.fix in issue.fix, shown


def test_every_problem_in_a_file_is_reported_at_once(workdir: Path) -> None:
    # A bad name or a bad step field must not hide the problems of the other steps.
    text = """\
name: Bad Name
owner: me
steps:
  corpus:
    kind: curate
    inputs:
      sources: [./nope.jsonl]
    config:
      vocab_size: 10
  model:
    kind: pretrain
    inputs:
      dataset: corpsu.dataset
    config:
      hiden_size: 64
    resources:
      num_workers: 0
  Eval:
    kind: pretrian
  late:
    kind: curate
    retries: 11
  uses-late:
    kind: pretrain
    inputs:
      dataset: late.dataset
"""
    path = workdir / "wf.yaml"
    path.write_text(text)
    err = reject(path)
    assert_well_formed(err, path)
    found = sorted((i.line or 0, i.field) for i in err.issues)
    assert found == [
        (1, "name"),
        (2, "owner"),
        (7, "steps.corpus.inputs.sources.0"),
        (9, "steps.corpus.config.vocab_size"),
        (13, "steps.model.inputs.dataset"),
        (15, "steps.model.config.hiden_size"),
        (17, "steps.model.resources.num_workers"),
        (18, "steps.Eval"),
        (19, "steps.Eval.kind"),
        (22, "steps.late.retries"),
    ], str(err)
    # `uses-late` refers to a step whose own fields are invalid: not also an "unknown step".
    assert str(err).startswith("workflow is invalid (10 problems):")


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    err = reject(tmp_path / "absent.yaml")
    assert err.issues[0].message == "no such file"
    assert err.issues[0].fix


# --- valid workflows ---------------------------------------------------------------------------


def test_quickstart_is_valid_and_in_order() -> None:
    wf = load_workflow(QUICKSTART)
    assert isinstance(wf, Workflow)
    assert wf.name == "quickstart"
    assert wf.order() == [
        "corpus",
        "base",
        "base_evals",
        "chat",
        "aligned",
        "evals",
        "endpoint",
        "release",
    ]
    assert [s.kind for s in wf.steps.values()] == [
        "curate",
        "pretrain",
        "evaluate",
        "sft",
        "dpo",
        "evaluate",
        "serve",
        "release",
    ]
    corpus, model = wf.steps["corpus"], wf.steps["base"]
    data = REPO / "workflows" / "data" / "shakespeare"
    assert [r.uri for r in corpus.inputs["sources"]] == [
        str(data / "plays.jsonl"),
        str(data / "poems"),
    ]
    (ref,) = model.inputs["dataset"]
    assert (ref.step, ref.output, ref.external) == ("corpus", "dataset", False)
    assert model.upstream() == ["corpus"]
    assert wf.steps["release"].upstream() == ["aligned", "evals"]
    assert model.config.hidden_size == 128
    assert model.resources.num_workers == 2
    assert model.retries == 1
    assert wf.path == QUICKSTART.resolve()
    assert len(wf.digest) == 64


def test_steps_come_in_topological_order_whatever_the_file_order(workdir: Path) -> None:
    text = (
        "name: t\nsteps:\n"
        + MODEL.replace("model:", "late:").replace("corpus.dataset", "mid.dataset")
        + "  mid:\n    kind: curate\n    inputs:\n      sources: [./data.jsonl]\n"
        + MODEL.replace("corpus.dataset", "mid.dataset")
    )
    path = workdir / "wf.yaml"
    path.write_text(text)
    wf = load_workflow(path)
    order = wf.order()
    assert sorted(order) == ["late", "mid", "model"]
    assert order.index("mid") < order.index("late")
    assert order.index("mid") < order.index("model")


def test_relative_sources_resolve_against_the_workflow_folder(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = workdir / "flows" / "nested"
    sub.mkdir(parents=True)
    (sub / "local.jsonl").write_text('{"text": "here"}\n')
    path = sub / "wf.yaml"
    path.write_text(
        "name: t\nsteps:\n  corpus:\n    kind: curate\n    inputs:\n"
        "      sources: [../../data.jsonl, local.jsonl]\n"
    )
    monkeypatch.chdir(workdir.parent)  # the current folder must not matter
    # A bare name is a `step.output` reference, not a path: a file needs ./ in front.
    (issue,) = reject(path).issues
    assert issue.message == "unknown step 'local' in 'local.jsonl'"
    assert issue.fix.endswith("if you meant a file, write ./local.jsonl")

    path.write_text(
        "name: t\nsteps:\n  corpus:\n    kind: curate\n    inputs:\n"
        "      sources: [../../data.jsonl, ./local.jsonl]\n"
    )
    wf = load_workflow(path)
    uris = [r.uri for r in wf.steps["corpus"].inputs["sources"]]
    assert uris == [str(workdir / "data.jsonl"), str(sub / "local.jsonl")]
    assert all(r.external for r in wf.steps["corpus"].inputs["sources"])


# --- the command line: a failed validation writes nothing anywhere -----------------------------


def cairn(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the real `cairn` entry point with all state pointed (by default) under `home`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CAIRN_DATABASE_URL", "MLFLOW_TRACKING_URI", "CAIRN_STORE", "RAY_ADDRESS")
    }
    env["CAIRN_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "cairn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def bad_file(workdir: Path) -> Path:
    path = workdir / "bad.yaml"
    path.write_text(CORPUS + MODEL.replace("corpus.dataset", "corpsu.dataset"))
    return path


@pytest.mark.parametrize("command", ["validate", "run"])
def test_invalid_workflow_exits_2_and_writes_nothing(
    command: str, bad_file: Path, workdir: Path
) -> None:
    home = workdir / "home"
    before = tree(workdir)
    res = cairn([command, str(bad_file)], cwd=workdir, home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown step 'corpsu'" in res.stderr
    assert "did you mean 'corpus'?" in res.stderr
    assert "Traceback" not in res.stderr
    # No CAIRN_HOME, no cairn.db, no store, no mlflow.db, no ./.cairn or ./mlruns in the cwd.
    assert not home.exists()
    assert tree(workdir) == before


def test_validate_json_lists_the_issues(bad_file: Path, workdir: Path) -> None:
    home = workdir / "home"
    res = cairn(["validate", str(bad_file), "--json"], cwd=workdir, home=home)
    assert res.returncode == 2
    data = json.loads(res.stdout)
    assert isinstance(data["issues"], list) and len(data["issues"]) == 1
    (issue,) = data["issues"]
    assert issue == {
        "file": str(bad_file),
        "line": 10,
        "field": "steps.model.inputs.dataset",
        "message": "unknown step 'corpsu' in 'corpsu.dataset'",
        "fix": "did you mean 'corpus'?; if you meant a file, write ./corpsu.dataset",
    }
    assert "corpsu" in data["error"]
    assert not home.exists()


def test_validate_of_a_valid_file_writes_nothing_either(workdir: Path) -> None:
    home = workdir / "home"
    before = tree(workdir)
    res = cairn(["validate", str(QUICKSTART), "--json"], cwd=workdir, home=home)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["valid"] is True
    assert [s["step"] for s in data["steps"]][:2] == ["corpus", "base"]
    assert data["steps"][1]["after"] == ["corpus"]
    assert data["steps"][-1]["after"] == ["aligned", "evals"]
    assert not home.exists()
    assert tree(workdir) == before
