"""A release of a model fine-tuned from a base model imported from outside Cairn.

The chain is sealed with the real `ArtifactStore` as the engine seals it (the base model is a
directory digested where it lies, as `describe_source` does for a workflow's external input; the
fine-tuned model's manifest names it as a parent with the licence the workflow stated), without
training, so the file takes seconds. The release must name the base and its licence in both
cards and in lineage.json, carry a copy of it with `include_sources`, and pass the audit; a
tampered copy must fail the audit, naming the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cairn import audit
from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.release import SPEC, ReleaseConfig
from cairn.stages.release.sources import NOT_DECLARED
from cairn.testing import local_context
from tests.tiny import make_tiny_model

WORKFLOW = {"name": "imported", "path": "/x/imported.yaml", "digest": "d" * 64, "git": "abc123"}


def _chain(root: Path, license: str | None, url: bool = False) -> dict:
    """base model (outside the store) + raw chat data → sft model, sealed as the engine does.
    With `url` the workflow names the base by a chained fsspec URL instead of a path."""
    work = root / "work"  # the workflow's folder: it names ./base and ./chat/sft.jsonl
    base = make_tiny_model(work / "base")
    name = f"simplecache::file://{base}" if url else "./base"
    data = work / "chat" / "sft.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    base_digest, _ = describe_source(name if url else str(base), "model", name)
    data_digest, _ = describe_source(str(data), "raw", "./chat/sft.jsonl")
    store = ArtifactStore(root / "store")
    staged = root / "stage-ft"
    shutil.copytree(base, staged)
    (staged / "training_metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    parents = [
        {
            "slot": "model",
            "digest": base_digest,
            "type": "model",
            "uri": name if url else str(base),
            "name": name,
            **({"license": license} if license else {}),
        },
        {
            "slot": "data",
            "digest": data_digest,
            "type": "raw",
            "uri": str(data),
            "name": "./chat/sft.jsonl",
        },
    ]
    tuned = store.seal(
        staged,
        f"sft/chat/{'f' * 8}/model",
        {
            "type": "model",
            "kind": "sft",
            "step": "chat",
            "output": "model",
            "fingerprint": "f" * 64,
            "producer": {"run_id": "r-1", "step_run_id": 1},
            "parents": parents,
            "metadata": {"steps": 1},
            "config": {"lr": 0.1},
            "fingerprint_inputs": {"packages": {"torch": "2.13.0"}},
            "workflow": WORKFLOW,
        },
    )
    return {"base": base, "base_digest": base_digest, "model": tuned, "name": name}


def _release(chain: dict, dest: Path, **config) -> Path:
    ctx = local_context(dest, step="release")
    ctx.workflow = {**WORKFLOW, "text": "name: imported\nsteps: {}\n"}
    model = chain["model"]
    meta = SPEC.run(
        ReleaseConfig(**config),
        {"model": InputArtifact(Path(model.uri), ArtifactType.MODEL, model.digest, {})},
        ctx,
    )
    return ctx.output_path("release") / meta["release"]["bundle"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _chain(tmp_path_factory.mktemp("imported"), "apache-2.0")


@pytest.fixture(scope="module")
def bundle(chain: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _release(chain, tmp_path_factory.mktemp("rel"), include_sources=True)


def test_the_cards_name_the_base_model_with_its_digest_and_licence(
    bundle: Path, chain: dict
) -> None:
    digest = chain["base_digest"]
    card = (bundle / "README.md").read_text()
    assert f"- Fine-tuned from `./base` (`{digest}`), licence apache-2.0" in card
    assert f"base model `./base` (sha256 `{digest[:16]}…`, licence apache-2.0)" in card
    data_card = (bundle / "DATA_CARD.md").read_text()
    base_models = data_card.split("## Base models", 1)[1]
    assert "| `./base` | apache-2.0 |" in base_models and digest[:16] in base_models
    # The chat data's licence was not stated: the card says so rather than leaving it blank.
    assert f"| `./chat/sft.jsonl` | {NOT_DECLARED} |" in data_card

    sources = json.loads((bundle / "data/manifest.json").read_text())["sources"]
    by_uri = {s["uri"]: s for s in sources}
    assert by_uri["./base"]["type"] == "model" and by_uri["./base"]["license"] == "apache-2.0"
    assert by_uri["./chat/sft.jsonl"]["license"] is None


def test_the_base_model_is_a_root_of_lineage_json_with_its_licence(
    bundle: Path, chain: dict
) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    node = next(n for n in lineage["nodes"] if n["digest"] == chain["base_digest"])
    assert node["type"] == "model" and node["step"] is None and node["uri"] == "./base"
    assert node["license"] == "apache-2.0"
    # Carried with include_sources, file by file, like raw data.
    assert node["copies"]["model.safetensors"] == "sources/base/model.safetensors"
    assert (bundle / "sources/base/config.json").is_file()
    manifest = json.loads((bundle / node["manifest"]).read_text())
    assert manifest["license"] == "apache-2.0" and manifest["source"] == "./base"
    assert "step" not in manifest and "parents" not in manifest
    edge = next(e for e in lineage["edges"] if e["parent"] == chain["base_digest"])
    assert (edge["child"], edge["slot"]) == (chain["model"].digest, "model")
    statement = json.loads((bundle / "provenance.intoto.json").read_text())
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    dep = next(d for d in deps if d["uri"] == "./base")
    assert dep["digest"]["sha256"] == chain["base_digest"]
    assert dep["annotations"] == {
        "type": "model",
        "manifest": node["manifest"],
        "license": "apache-2.0",
    }


def test_the_audit_passes_and_counts_the_imported_model(bundle: Path) -> None:
    report = audit(bundle, load_model=False)
    assert report.ok, [c for c in report.checks if not c.ok]
    lineage = next(c for c in report.checks if c.name == "lineage")
    assert "1 imported model(s)" in lineage.detail


def test_a_tampered_copy_of_the_base_model_fails_the_audit(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    target = copy / "sources/base/model.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    # Rewrite SHA256SUMS so that only the manifest of the base model can tell.
    sums = (copy / "SHA256SUMS").read_text()
    old = next(
        line for line in sums.splitlines() if line.endswith("sources/base/model.safetensors")
    )
    from cairn.stage.files import sha256_file

    new = f"{sha256_file(target)}  sources/base/model.safetensors"
    (copy / "SHA256SUMS").write_text(sums.replace(old, new))
    report = audit(copy, load_model=False)
    problems = [p for c in report.checks if c.name == "copies" for p in c.problems]
    assert not report.ok
    assert (
        "sources/base/model.safetensors: differs from model.safetensors in the manifest of "
        f"{_digest_of(copy)[:12]}"
    ) in problems, problems


def _digest_of(bundle: Path) -> str:
    lineage = json.loads((bundle / "lineage.json").read_text())
    return next(n["digest"] for n in lineage["nodes"] if n["uri"] == "./base")


def test_a_changed_base_model_stops_the_release(chain: dict, tmp_path: Path) -> None:
    from cairn.errors import CairnError

    config = chain["base"] / "config.json"
    original = config.read_text()
    config.write_text(original.replace("{", '{"edited": true, ', 1))
    try:
        with pytest.raises(CairnError, match="changed since it was used"):
            _release(chain, tmp_path / "r")
    finally:
        config.write_text(original)


def test_a_base_model_without_a_licence_says_so(tmp_path: Path) -> None:
    chain = _chain(tmp_path / "c", None)
    out = _release(chain, tmp_path / "r")
    card = (out / "README.md").read_text()
    assert f"- Fine-tuned from `./base` (`{chain['base_digest']}`), licence {NOT_DECLARED}" in card
    lineage = json.loads((out / "lineage.json").read_text())
    node = next(n for n in lineage["nodes"] if n["digest"] == chain["base_digest"])
    assert node["license"] is None and node["copies"] == {}  # not carried without include_sources
    assert audit(out, load_model=False).ok


def test_a_base_model_named_by_an_fsspec_url_is_recorded_where_it_lies(tmp_path: Path) -> None:
    chain = _chain(tmp_path / "c", "mit", url=True)
    out = _release(chain, tmp_path / "r", include_sources=True)
    url = chain["name"]
    assert url.startswith("simplecache::file://")
    card = (out / "README.md").read_text()
    assert f"- Fine-tuned from `{url}` (`{chain['base_digest']}`), licence mit" in card
    lineage = json.loads((out / "lineage.json").read_text())
    node = next(n for n in lineage["nodes"] if n["digest"] == chain["base_digest"])
    # As raw data given by URI: recorded with its digest and read where it lies, not carried.
    assert (node["uri"], node["license"], node["copies"]) == (url, "mit", {})
    assert not (out / "sources").exists() or not any((out / "sources").rglob("*.safetensors"))
    assert audit(out, load_model=False).ok
