"""Tests of an external input written with its licence: `{source: PATH, license: TEXT}`.

The mapping is accepted for any external input (a model directory imported from outside, raw
data, one entry of a list) and its licence lands on the resolved `Ref`; a wrong key, a missing
`source`, a licence that is not text, or a mapping around a `step.output` is refused with the
file, line, field and fix. `cairn validate` lists the sources with their licences. A chained
fsspec URL (`simplecache::file://…`) names a model directory the way a path does: same digest,
readable into a local copy, no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.workflow import load_workflow
from tests.unit.workflow.test_checks import assert_well_formed, cairn, reject, sources

SFT = """\
name: t
steps:
  chat:
    kind: sft
    inputs:
      model: {model}
      data: {data}
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return sources(tmp_path)


def write(workdir: Path, model: str, data: str = "./data.jsonl") -> Path:
    path = workdir / "wf.yaml"
    path.write_text(SFT.format(model=model, data=data))
    return path


def test_a_source_with_its_licence_resolves_with_it(workdir: Path) -> None:
    wf = load_workflow(write(workdir, "{source: ./hf-model, license: apache-2.0}"))
    [model] = wf.steps["chat"].inputs["model"]
    assert (model.text, model.uri, model.license) == (
        "./hf-model",
        str(workdir / "hf-model"),
        "apache-2.0",
    )
    [data] = wf.steps["chat"].inputs["data"]
    assert data.license is None  # a plain path states none


def test_raw_data_in_a_list_may_state_its_licence_too(workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_text(
        "name: t\nsteps:\n  corpus:\n    kind: curate\n    inputs:\n"
        "      sources:\n        - {source: ./data.jsonl, license: cc-by-4.0}\n"
        "        - ./hf-model/config.json\n"
    )
    refs = load_workflow(path).steps["corpus"].inputs["sources"]
    assert [(r.text, r.license) for r in refs] == [
        ("./data.jsonl", "cc-by-4.0"),
        ("./hf-model/config.json", None),
    ]


@pytest.mark.parametrize(
    ("model", "field", "message", "fix"),
    [
        (
            "{source: ./hf-model, licence: mit}",
            "steps.chat.inputs.model.licence",
            "unknown field 'licence' in a source",
            "did you mean 'license'?",
        ),
        (
            "{license: mit}",
            "steps.chat.inputs.model",
            "needs `source:`",
            "add `source: ./path`",
        ),
        (
            "{source: ./hf-model, license: 2}",
            "steps.chat.inputs.model.license",
            "must be the licence's name as text, not 2",
            "license: apache-2.0",
        ),
        (
            "{source: ./hf-model, license: ''}",
            "steps.chat.inputs.model.license",
            "must be the licence's name as text",
            "leave `license:` out",
        ),
        (
            "{source: ./data.jsonl, license: mit}",
            "steps.chat.inputs.model",
            "is raw data, but this input needs a model",
            "config.json",
        ),
        (
            "{source: ./missing, license: mit}",
            "steps.chat.inputs.model",
            "does not exist",
            "fix the path",
        ),
        (
            "{source: ./hf-model, license: " + "x" * 500_000 + "}",
            "steps.chat.inputs.model.license",
            "is 500,000 characters long",
            "LICENSE file",
        ),
        (
            "{source: ./hf-model, " + ", ".join(f"k{i}: {i}" for i in range(500)) + "}",
            "steps.chat.inputs.model.k0",
            "unknown field 'k0' in a source (and 499 more)",
            "takes `source:`",
        ),
        (
            "{source: {a: 1}}",
            "steps.chat.inputs.model.source",
            "must be a path or URI, not {'a': 1}",
            "source: ./base-model",
        ),
    ],
    ids=[
        "misspelt-key",
        "no-source",
        "number",
        "empty",
        "not-a-model",
        "missing",
        "huge-licence",
        "many-keys",
        "nested",
    ],
)
def test_a_malformed_source_mapping_is_refused_precisely(
    workdir: Path, model: str, field: str, message: str, fix: str
) -> None:
    path = write(workdir, model)
    err = reject(path)
    assert_well_formed(err, path)
    shown = "\n".join(map(str, err.issues))
    assert len(err.issues) == 1, shown
    [issue] = err.issues
    assert (issue.field, issue.line) == (field, 6), shown
    assert message in issue.message and fix in issue.fix, shown


def test_a_licence_on_a_step_output_is_refused(workdir: Path) -> None:
    path = workdir / "wf.yaml"
    path.write_text(
        SFT.format(model="./hf-model", data="./data.jsonl")
        + "  again:\n    kind: sft\n    inputs:\n"
        "      model: {source: chat.model, license: mit}\n      data: ./data.jsonl\n"
    )
    err = reject(path)
    assert_well_formed(err, path)
    [issue] = err.issues
    assert (issue.field, issue.line) == ("steps.again.inputs.model", 11)
    assert "'chat.model' is an earlier step's output" in issue.message
    assert "write `chat.model` on its own" in issue.fix


def test_validate_lists_the_sources_with_their_licences(workdir: Path) -> None:
    path = write(workdir, "{source: ./hf-model, license: apache-2.0}")
    home = workdir / "home"
    res = cairn(["validate", str(path)], cwd=workdir, home=home)
    assert res.returncode == 0, res.stderr
    assert "chat.model  ./hf-model  licence apache-2.0" in res.stdout
    res = cairn(["validate", str(path), "--json"], cwd=workdir, home=home)
    listed = json.loads(res.stdout)["sources"]
    assert {"step": "chat", "input": "model", "source": "./hf-model", "license": "apache-2.0"} in (
        listed
    )
    assert not home.exists()  # validation writes nothing


def test_a_chained_fsspec_url_names_a_model_as_a_path_does(workdir: Path) -> None:
    local = workdir / "hf-model"
    (local / "model.safetensors").write_bytes(b"\x00" * 16)
    url = f"simplecache::file://{local}"
    wf = load_workflow(write(workdir, f"{{source: '{url}', license: mit}}"))
    [model] = wf.steps["chat"].inputs["model"]
    assert (model.uri, model.license) == (url, "mit")  # read where it lies, through fsspec
    by_url, manifest = describe_source(url, "model", url)
    assert by_url == describe_source(str(local), "model")[0]  # content, not location
    assert manifest["source"] == url
    copy = ArtifactStore(workdir / "store").local_path(url, by_url)
    assert sorted(p.name for p in copy.iterdir()) == ["config.json", "model.safetensors"]
    # A file:// URI is a local path, relative paths aside.
    wf = load_workflow(write(workdir, f"{{source: 'file://{local}', license: mit}}"))
    assert wf.steps["chat"].inputs["model"][0].uri == str(local)


def test_curate_states_the_licence_given_on_its_input_unless_its_config_says_otherwise(
    tmp_path: Path,
) -> None:
    from cairn.stage import ArtifactType, InputArtifact
    from cairn.stages.curate import CurateConfig
    from cairn.stages.curate.sources import from_inputs

    def source(name: str, license: str | None) -> InputArtifact:
        meta = {"license": license} if license else {}
        return InputArtifact(tmp_path / name, ArtifactType.RAW, "a" * 64, meta, name=name)

    given = {"sources": [source("./a.jsonl", "cc-by-4.0"), source("./b.jsonl", None)]}
    records = {s.name: s.record() for s in from_inputs(CurateConfig(), given, ())}
    assert (records["./a.jsonl"]["license"], records["./b.jsonl"]["license"]) == ("cc-by-4.0", None)
    config = CurateConfig(sources={"a": {"license": "cc0-1.0"}})
    records = {s.name: s.record() for s in from_inputs(config, given, ())}
    assert records["./a.jsonl"]["license"] == "cc0-1.0"
