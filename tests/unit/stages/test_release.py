"""Tests of the `release` stage and `cairn audit` on a real artifact chain built in the store.

The chain (raw source → dataset → pretrained model with checkpoints → fine-tuned model → eval
report) is sealed with the real `ArtifactStore`, as the engine would, but without running any
training, so the whole file takes seconds. A clean release must pass the audit; one flipped
byte in any file, a deleted checkpoint, or a rewired lineage edge must fail it, naming the file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cairn import audit
from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.cli import app
from cairn.errors import CairnError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.curate.card import CardStats
from cairn.stages.curate.card_files import write_card
from cairn.stages.release import SPEC, ReleaseConfig
from cairn.testing import local_context
from tests.tiny import corpus_texts, make_tiny_model

WORKFLOW = {"name": "demo", "path": "/x/demo.yaml", "digest": "d" * 64, "git": "abc123-dirty"}


def _seal(store: ArtifactStore, staging: Path, kind: str, type_: str, parents: list, **extra):
    art = store.seal(
        staging,
        f"{kind}/{kind}/{'f' * 8}/{type_}",
        {
            "type": type_,
            "kind": kind,
            "step": kind,
            "output": type_,
            "fingerprint": "f" * 64,
            "producer": {"run_id": "r-1", "step_run_id": 1},
            "parents": parents,
            "metadata": extra.pop("metadata", {}),
            "config": {"lr": 0.1},
            "fingerprint_inputs": {"packages": {"torch": "2.13.0"}},
            "workflow": WORKFLOW,
        },
    )
    return art


def _parent(slot: str, art_or_source: tuple[str, str, str]) -> dict:
    # As the engine records an input (cairn/engine/attempt.py): `name` is the reference as the
    # workflow wrote it, `step.output` for a step's output and the path for a source.
    digest, type_, uri = art_or_source
    name = f"./data/{Path(uri).name}" if type_ == "raw" else f"upstream.{type_}"
    return {"slot": slot, "digest": digest, "type": type_, "uri": uri, "name": name}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("chain")
    store = ArtifactStore(root / "store")
    tiny = make_tiny_model(root / "tiny")

    source = root / "data" / "corpus.txt"
    source.parent.mkdir()
    source.write_text("To be, or not to be, that is the question.\n")
    src_digest, _ = describe_source(str(source), "raw")

    ds = root / "stage-ds"
    (ds / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, ds / "tokenizer" / name)
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "seq_len": 64,
                "vocab_size": 512,
                "train_tokens": 1000,
                "validation_tokens": 100,
                "sources": {
                    "./data/corpus.txt": {
                        "documents_in": 3,
                        "documents_out": 2,
                        "removed": {"min_words": 1},
                        "tokens": 1100,
                    }
                },
                "filters": {"min_words": 1},
            }
        )
    )
    (ds / "documents.jsonl").write_text('{"id": "a1", "source": "./data/corpus.txt"}\n')
    dataset = _seal(
        store, ds, "curate", "dataset", [_parent("sources", (src_digest, "raw", str(source)))]
    )

    pt = root / "stage-pt"
    shutil.copytree(tiny, pt)
    (pt / "training_metrics.jsonl").write_text(
        '{"step": 1, "train/loss": 6.0}\n{"step": 2, "train/loss": 5.0, "val/loss": 5.5}\n'
    )
    for step in (1, 2):
        ck = pt / "checkpoints" / f"step-{step:07d}"
        ck.mkdir(parents=True)
        shutil.copy(tiny / "model.safetensors", ck / "model.safetensors")
        shutil.copy(tiny / "config.json", ck / "config.json")
    (pt / "checkpoints.json").write_text(
        json.dumps(
            [
                {"step": s, "tokens_seen": 64 * s, "path": f"checkpoints/step-{s:07d}"}
                for s in (1, 2)
            ]
        )
    )
    pretrained = _seal(
        store,
        pt,
        "pretrain",
        "model",
        [_parent("dataset", (dataset.digest, "dataset", dataset.uri))],
        metadata={"parameters": 123, "steps": 2, "tokens_seen": 128, "final_train_loss": 5.0},
    )

    ft = root / "stage-ft"
    shutil.copytree(tiny, ft)
    (ft / "training_metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    tuned = _seal(
        store, ft, "sft", "model", [_parent("model", (pretrained.digest, "model", pretrained.uri))]
    )

    ev = root / "stage-ev"
    (ev / "samples").mkdir(parents=True)
    (ev / "report.json").write_text(json.dumps({"model": {"digest": tuned.digest}}))
    (ev / "samples" / "mc.jsonl").write_text('{"doc_id": 0, "acc": 1.0}\n')
    report = _seal(
        store,
        ev,
        "evaluate",
        "eval_report",
        [_parent("model", (tuned.digest, "model", tuned.uri))],
        metadata={"model_digest": tuned.digest, "metrics": {"mc/acc": 1.0}},
    )
    return {"store": store, "root": root, "model": tuned, "eval": report, "source": source}


def _input(art, type_: ArtifactType) -> InputArtifact:
    return InputArtifact(Path(art.uri), type_, art.digest, art.manifest.get("metadata", {}))


def _release(chain: dict, dest: Path, evals: list | None = None, **config) -> Path:
    ctx = local_context(dest, step="release")
    ctx.workflow = {**WORKFLOW, "text": "name: demo\nsteps: {}\n"}
    evals = [chain["eval"]] if evals is None else evals
    meta = SPEC.run(
        ReleaseConfig(**config),
        {
            "model": _input(chain["model"], ArtifactType.MODEL),
            "evals": [_input(e, ArtifactType.EVAL_REPORT) for e in evals],
        },
        ctx,
    )
    assert meta["release"]["model_digest"] == chain["model"].digest
    return ctx.output_path("release") / meta["release"]["bundle"]


@pytest.fixture(scope="module")
def bundle(chain: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = _release(chain, tmp_path_factory.mktemp("rel"))
    # Seal it as the engine does: the bundle is the one directory inside the artifact.
    store = ArtifactStore(tmp_path_factory.mktemp("relstore"))
    sealed = store.seal(out.parent, "release/release/x/release", {"type": "release", "parents": []})
    return Path(sealed.uri) / out.name


def test_bundle_has_everything_the_issue_lists(bundle: Path, chain: dict) -> None:
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert {"model/model.safetensors", "model/tokenizer.json", "model/config.json"} <= files
    assert not any(f.startswith("model/checkpoints/") for f in files)
    assert {
        "checkpoints/pretrain/step-0000001/model.safetensors",
        "checkpoints/pretrain/step-0000002/model.safetensors",
        "checkpoints/index.json",
    } <= files
    assert {
        "data/manifest.json",
        "data/curate/dataset.json",
        "data/curate/documents.jsonl",
    } <= files
    assert {
        "training/pretrain/training_metrics.csv",
        "training/sft/training_metrics.jsonl",
        "evals/evaluate/report.json",
        "config/workflow.yaml",
        "config/steps.json",
        "config/environment.json",
        "README.md",
        "DATA_CARD.md",
        "lineage.json",
        "SHA256SUMS",
    } <= files

    index = json.loads((bundle / "checkpoints/index.json").read_text())
    assert [(c["step"], c["tokens_seen"], c["copied"]) for c in index] == [
        (1, 64, True),
        (2, 128, True),
    ]
    data = json.loads((bundle / "data/manifest.json").read_text())
    assert data["sources"][0]["uri"] == "./data/corpus.txt"  # as written, never where it lay
    assert data["datasets"][0]["sources"]["./data/corpus.txt"]["removed"] == {"min_words": 1}
    csv = (bundle / "training/pretrain/training_metrics.csv").read_text().splitlines()
    assert csv[0] == "step,train/loss,val/loss" and csv[2] == "2,5.0,5.5"

    env = json.loads((bundle / "config/environment.json").read_text())
    assert env["git_commit"] == "abc123" and env["git_dirty"] is True
    assert env["result_packages"] == {"torch": "2.13.0"}

    lineage = json.loads((bundle / "lineage.json").read_text())
    assert {n["type"] for n in lineage["nodes"]} == {"raw", "dataset", "model", "eval_report"}
    assert len(lineage["edges"]) == 4  # source→dataset→pretrain→sft→eval

    card = (bundle / "README.md").read_text()
    assert chain["model"].digest in card and "mc/acc" in card and "```mermaid" in card
    assert "removed by `min_words`" in (bundle / "DATA_CARD.md").read_text()


def test_clean_release_passes_audit(bundle: Path, chain: dict) -> None:
    report = audit(bundle)
    assert report.ok, [c for c in report.checks if not c.ok]
    assert [c.name for c in report.checks] == [
        "checksums",
        "lineage",
        "copies",
        "evals",
        "provenance",
        "model",
    ]
    # Given the store artifact around it, the audit checks the store's seal as well.
    in_store = audit(bundle.parent, load_model=False)
    assert in_store.ok and in_store.path == str(bundle)
    assert [c.name for c in in_store.checks][:2] == ["seal", "checksums"]
    assert report.model_digest == chain["model"].digest
    result = CliRunner().invoke(app, ["audit", str(bundle), "--no-load"])
    assert result.exit_code == 0 and "PASS" in result.output


def test_one_flipped_byte_in_any_file_fails_the_audit_naming_it(
    bundle: Path, tmp_path: Path
) -> None:
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert len(files) > 30
    for rel in files:
        copy = tmp_path / rel.replace("/", "_")
        shutil.copytree(bundle, copy)
        target = copy / rel
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        report = audit(copy, load_model=False)
        problems = [p for c in report.checks for p in c.problems]
        assert not report.ok, f"flipping a byte of {rel} went unnoticed"
        assert any(p.startswith(rel + ":") for p in problems), (rel, problems)
        shutil.rmtree(copy)


def test_an_edited_name_in_sha256sums_is_blamed_on_sha256sums(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rel"
    shutil.copytree(bundle, copy)
    sums = copy / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("  README.md\n", "  README.me\n"))
    problems = [p for c in audit(copy, load_model=False).checks for p in c.problems]
    assert problems == [
        "SHA256SUMS: lists README.me, which is not in the bundle (README.md has its sha256)",
        "README.md: not listed in SHA256SUMS",
    ]


def test_deleting_an_intermediate_checkpoint_fails_the_audit(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rel"
    shutil.copytree(bundle, copy)
    shutil.rmtree(copy / "checkpoints/pretrain/step-0000001")
    report = audit(copy, load_model=False)
    problems = [p for c in report.checks for p in c.problems]
    assert not report.ok
    assert "checkpoints/pretrain/step-0000001/model.safetensors: missing" in problems
    result = CliRunner().invoke(app, ["audit", str(copy), "--no-load", "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False


def test_consistently_rewritten_checksums_still_fail_on_the_manifests(
    bundle: Path, tmp_path: Path
) -> None:
    """Swapping the weights *and* updating SHA256SUMS is caught by the artifact's manifest."""
    from cairn.stage.files import sha256_file

    copy = tmp_path / "rel"
    shutil.copytree(bundle, copy)
    weights = copy / "model/model.safetensors"
    shutil.copy(copy / "checkpoints/pretrain/step-0000001/model.safetensors", weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    sums = (copy / "SHA256SUMS").read_text().splitlines()
    sums = [
        f"{sha256_file(weights)}  model/model.safetensors"
        if line.endswith("  model/model.safetensors")
        else line
        for line in sums
    ]
    (copy / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    report = audit(copy, load_model=False)
    assert {c.name: c.ok for c in report.checks}["checksums"] is True
    assert not report.ok
    assert any(
        "model/model.safetensors: differs from model.safetensors" in p
        for c in report.checks
        for p in c.problems
    )


def test_eval_of_another_model_is_refused(chain: dict, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "other", seed=1)
    store = chain["store"]
    ev = tmp_path / "ev"
    ev.mkdir()
    (ev / "report.json").write_text("{}")
    other_art = store.seal(other, "x/other/f/model", {"type": "model", "parents": []})
    stray = _seal(
        store,
        ev,
        "evaluate2",
        "eval_report",
        [_parent("model", (other_art.digest, "model", other_art.uri))],
    )
    with pytest.raises(CairnError, match="neither the released model"):
        _release(chain, tmp_path / "r", evals=[stray])


def test_changed_raw_source_is_refused(chain: dict, tmp_path: Path) -> None:
    source: Path = chain["source"]
    original = source.read_text()
    source.write_text(original + "more\n")
    try:
        with pytest.raises(CairnError, match="changed since it was used"):
            _release(chain, tmp_path / "r")
    finally:
        source.write_text(original)


def test_checkpoints_over_the_size_limit_are_indexed_not_copied(
    chain: dict, tmp_path: Path
) -> None:
    out = _release(chain, tmp_path / "r", copy_checkpoints_max_gb=0)
    index = json.loads((out / "checkpoints/index.json").read_text())
    assert [c["copied"] for c in index] == [False, False]
    assert all(c["uri"].endswith(c["path_in_artifact"]) and c["files"] for c in index)
    assert not (out / "checkpoints/pretrain").exists()
    assert audit(out, load_model=False).ok


def test_include_sources_carries_each_source_and_the_audit_checks_the_copy(
    chain: dict, tmp_path: Path
) -> None:
    out = _release(chain, tmp_path / "r", include_sources=True)
    assert (out / "sources/data/corpus.txt").read_bytes() == chain["source"].read_bytes()
    lineage = json.loads((out / "lineage.json").read_text())
    src = next(n for n in lineage["nodes"] if n["type"] == "raw")
    assert src["uri"] == "./data/corpus.txt"  # as the workflow wrote it, not where it lay
    assert src["copies"] == {"corpus.txt": "sources/data/corpus.txt"}
    assert audit(out, load_model=False).ok

    (out / "sources/data/corpus.txt").write_text("To be, or not to be, that is the questioN.\n")
    report = audit(out, load_model=False)
    problems = [p for c in report.checks for p in c.problems]
    assert not report.ok and any("sources/data/corpus.txt" in p for p in problems), problems


def test_include_sources_over_its_limit_names_the_sources_and_the_fix(
    chain: dict, tmp_path: Path
) -> None:
    with pytest.raises(CairnError, match=r"\./data/corpus\.txt.*include_sources_max_mb"):
        _release(chain, tmp_path / "r", include_sources=True, include_sources_max_mb=0)


def test_lineage_formats_from_a_bundle(bundle: Path) -> None:
    runner = CliRunner()
    dot = runner.invoke(app, ["lineage", str(bundle), "--format", "dot"])
    assert dot.exit_code == 0 and dot.output.startswith("digraph lineage {")
    assert dot.output.count("->") == 4
    mermaid = runner.invoke(app, ["lineage", str(bundle), "--format", "mermaid"])
    assert mermaid.exit_code == 0 and mermaid.output.startswith("flowchart LR")
    tree = runner.invoke(app, ["lineage", str(bundle), "--json"])
    data = json.loads(tree.stdout)
    assert data["kind"] == "sft"
    assert data["parents"][0]["kind"] == "pretrain"
    assert data["parents"][0]["parents"][0]["parents"][0]["type"] == "raw"


# -------------------------------------------------------------------------------------------------
# The dataset's data card in the release: its card/ folder and DATA_CARD.md are copied (checked
# against the dataset's manifest like every copy), the release's DATA_CARD.md shows the card with
# images that resolve inside the bundle, and a dataset from before the card still releases.
# -------------------------------------------------------------------------------------------------

CARD_SOURCE = "./data/plays.jsonl"


@pytest.fixture(scope="module")
def carded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """raw source → dataset with a data card (written by write_card over real text) → model."""
    root = tmp_path_factory.mktemp("carded")
    store = ArtifactStore(root / "store")
    tiny = make_tiny_model(root / "tiny")
    texts = corpus_texts(80)
    source = root / "data" / "plays.jsonl"
    source.parent.mkdir()
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    src_digest, _ = describe_source(str(source), "raw")

    stats = CardStats()
    chars = np.array([len(t) for t in texts])
    stats.add_input(CARD_SOURCE, chars, np.array([len(t.split()) for t in texts]))
    short = chars < 400
    for i in np.flatnonzero(short):
        stats.add_removed(CARD_SOURCE, "min_chars", f"{i:016x}", texts[i])
    stats.add_output(CARD_SOURCE, chars[~short], chars[~short] // 4 + 1)
    kept = int((~short).sum())
    meta = {
        "seq_len": 64,
        "vocab_size": 512,
        "train_sequences": 10,
        "validation_sequences": 1,
        "train_tokens": 640,
        "validation_tokens": 64,
        "sources": {
            CARD_SOURCE: {
                "documents_in": len(texts),
                "documents_out": kept,
                "removed": {"min_chars": int(short.sum()), "dedup": 0},
                "tokens": 4321,
                "license": "Public domain",
                "digest": src_digest,
            }
        },
        "filters": {"min_chars": int(short.sum()), "dedup": 0},
        "decontamination": {
            "ngram": 13,
            "action": "drop",
            "files": {"tasks/mc/test.jsonl": "c" * 64},
            "items": 4,
            "contaminated": {CARD_SOURCE: 0},
            "examples": [],
        },
        "card": stats.to_dict(),
        "config": {"min_chars": 400},
    }
    ds = root / "stage-ds"
    (ds / "tokenizer").mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny / name, ds / "tokenizer" / name)
    (ds / "dataset.json").write_text(json.dumps(meta))
    (ds / "decontamination.jsonl").write_text("")
    written = write_card(ds, meta)
    dataset = _seal(
        store, ds, "curate", "dataset", [_parent("sources", (src_digest, "raw", str(source)))]
    )
    pt = root / "stage-pt"
    shutil.copytree(tiny, pt)
    (pt / "training_metrics.jsonl").write_text('{"step": 1, "train/loss": 6.0}\n')
    model = _seal(
        store,
        pt,
        "pretrain",
        "model",
        [_parent("dataset", (dataset.digest, "dataset", dataset.uri))],
    )
    removed = [texts[i] for i in np.flatnonzero(short)]
    return {"model": model, "written": written, "removed": removed, "kept": kept, "n": len(texts)}


def _image_links(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_a_dataset_card_is_in_the_release_and_passes_the_audit(
    carded: dict, tmp_path: Path
) -> None:
    out = _release(carded, tmp_path / "r", evals=[])
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {f"data/curate/{rel}" for rel in carded["written"]} <= files
    assert "data/curate/decontamination.jsonl" in files

    card = (out / "DATA_CARD.md").read_text()
    links = _image_links(card)
    assert sorted(links) == [
        "data/curate/card/lengths.png",
        "data/curate/card/removed.png",
        "data/curate/card/tokens.png",
    ]
    for link in links:
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link
    # The tables, the licence, the decontamination record and the removed examples are all there.
    n, kept = carded["n"], carded["kept"]
    assert f"| documents read | {n} | {n} |  |" in card
    assert f"| **kept** | {kept} | {kept} | {100 * kept / n:.1f}% |" in card
    assert "| tokens kept | 4,321 | 4,321 |  |" in card
    assert f"| `{CARD_SOURCE}` | Public domain |" in card
    assert "### Decontamination" in card and "### Removed examples" in card
    assert " ".join(carded["removed"][0].split())[:60] in " ".join(card.split())
    assert "[data/curate/DATA_CARD.md](data/curate/DATA_CARD.md)" in card
    # The dataset's own card resolves its images from where it was copied to.
    own = out / "data/curate/DATA_CARD.md"
    assert all((own.parent / link).is_file() for link in _image_links(own.read_text()))
    assert "record" not in json.loads((out / "data/manifest.json").read_text())["datasets"][0]

    report = audit(out)
    assert report.ok, [c for c in report.checks if not c.ok]
    lineage = json.loads((out / "lineage.json").read_text())
    copies = next(n for n in lineage["nodes"] if n["type"] == "dataset")["copies"]
    assert copies["card/lengths.png"] == "data/curate/card/lengths.png"
    assert copies["DATA_CARD.md"] == "data/curate/DATA_CARD.md"

    # A card plot changed after the dataset was sealed is caught against its manifest.
    plot = out / "data/curate/card/removed.png"
    data = bytearray(plot.read_bytes())
    data[len(data) // 2] ^= 0x01
    plot.write_bytes(bytes(data))
    problems = [p for c in audit(out, load_model=False).checks for p in c.problems]
    assert any(p.startswith("data/curate/card/removed.png: differs from") for p in problems)


def test_a_dataset_from_before_the_card_still_releases(bundle: Path) -> None:
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert not any(f.startswith("data/curate/card/") for f in files)
    assert "data/curate/DATA_CARD.md" not in files
    card = (bundle / "DATA_CARD.md").read_text()
    assert "| **kept** | 2 | 2 | 66.7% |" in card and "| tokens kept | 1,100 | 1,100 |  |" in card
    assert not _image_links(card) and "Removed examples" not in card
    assert (
        json.loads((bundle / "data/manifest.json").read_text())["datasets"][0]["card_files"] == []
    )
    assert audit(bundle, load_model=False).ok


# -------------------------------------------------------------------------------------------------
# Contamination in the release: whether each eval report's tasks were checked against the model's
# training data (the `contamination` summary evaluate/gate.py puts in the eval_report metadata) is
# summarised per eval step in the release's metadata; report.json travels in evals/<step>/, and
# the bundle still passes the audit.
# -------------------------------------------------------------------------------------------------


def _eval_with(chain: dict, tmp_path: Path, step: str, contamination: dict | None):
    ev = tmp_path / f"stage-{step}"
    ev.mkdir()
    # As evaluate writes it: the report holds what its metadata says (two reports that differ
    # only in metadata would be one artifact: an artifact is its files' content).
    record = {"contamination": {"allowed": contamination["allowed"]}} if contamination else {}
    (ev / "report.json").write_text(
        json.dumps({"model": {"digest": chain["model"].digest}, **record})
    )
    metadata: dict = {"model_digest": chain["model"].digest, "metrics": {f"{step}/acc": 0.5}}
    if contamination is not None:
        metadata |= {"allow_contaminated": contamination["allowed"], "contamination": contamination}
    return _seal(
        chain["store"],
        ev,
        step,
        "eval_report",
        [_parent("model", (chain["model"].digest, "model", chain["model"].uri))],
        metadata=metadata,
    )


def test_release_metadata_says_per_eval_whether_contamination_was_checked(
    chain: dict, tmp_path: Path
) -> None:
    allowed = {
        "allowed": True,
        "checked": False,
        "unchecked_tasks": ["mc"],
        "contaminated_docs": {},
    }
    checked = {
        "allowed": False,
        "checked": True,
        "unchecked_tasks": [],
        "contaminated_docs": {"removed": 2},
    }
    evals = [
        chain["eval"],  # made before evaluate recorded contamination
        _eval_with(chain, tmp_path, "evals_allowed", allowed),
        _eval_with(chain, tmp_path, "evals_checked", checked),
    ]
    ctx = local_context(tmp_path / "rel", step="release")
    ctx.workflow = {**WORKFLOW, "text": "name: demo\nsteps: {}\n"}
    meta = SPEC.run(
        ReleaseConfig(),
        {
            "model": _input(chain["model"], ArtifactType.MODEL),
            "evals": [_input(e, ArtifactType.EVAL_REPORT) for e in evals],
        },
        ctx,
    )
    ctx.flush()
    assert meta["release"]["contamination"] == {
        "evaluate": {"recorded": False, "allowed": None, "checked": None},
        "evals_allowed": {
            "recorded": True,
            "allowed": True,
            "checked": False,
            "unchecked_tasks": ["mc"],
            "contaminated_docs": {},
        },
        "evals_checked": {
            "recorded": True,
            "allowed": False,
            "checked": True,
            "unchecked_tasks": [],
            "contaminated_docs": {"removed": 2},
        },
    }
    logs = [r["message"] for r in ctx.reporter.drain() if r["type"] == "log"]
    assert (
        "release: evals_allowed: NOT checked against the training data (allow_contaminated: "
        "true): mc" in logs
    )
    assert (
        "release: evals_checked: every task's data was checked against the training data; "
        "overlapping training documents: 2 removed" in logs
    )
    out = ctx.output_path("release") / meta["release"]["bundle"]
    report = json.loads((out / "evals/evals_allowed/report.json").read_text())
    assert report["contamination"] == {"allowed": True}
    report = json.loads((out / "evals/evals_checked/report.json").read_text())
    assert report["contamination"] == {"allowed": False}
    assert audit(out, load_model=False).ok


def test_the_model_card_names_the_python_a_trusted_eval_ran(chain: dict, tmp_path: Path) -> None:
    """An evaluate step with trust_task_code: true ran Python from its task folder; the card
    says so, with each file's sha256 (from the eval report's metadata, evaluate/taskcode.py)."""
    ev = tmp_path / "stage-evals_code"
    ev.mkdir()
    (ev / "report.json").write_text(json.dumps({"model": {"digest": chain["model"].digest}}))
    digest = "ab" * 32
    trusted = _seal(
        chain["store"],
        ev,
        "evals_code",
        "eval_report",
        [_parent("model", (chain["model"].digest, "model", chain["model"].uri))],
        metadata={
            "model_digest": chain["model"].digest,
            "metrics": {"code/acc": 0.5},
            "trust_task_code": True,
            "task_code": [{"path": "utils.py", "sha256": digest}],
        },
    )
    out = _release(chain, tmp_path / "rel", evals=[chain["eval"], trusted])
    card = (out / "README.md").read_text()
    assert "Python from the task folders (trust_task_code: true):" in card
    assert f"- `evals_code`: lm-eval ran `utils.py` (sha256 `{digest[:16]}…`)" in card
    assert "- `evaluate`: lm-eval ran" not in card  # an eval that ran none is not listed


# --- cairn reproduce: what it refuses and what it names, before any run -----------------------


def test_reproduce_refuses_other_package_versions_and_says_how_to_go_on(
    bundle: Path, tmp_path: Path
) -> None:
    import cairn

    # The chain recorded torch 2.13.0; this venv has 2.13.0+cpu (a local build: another version).
    with pytest.raises(CairnError, match=r"torch 2\.13\.0 \(installed: .*--ignore-versions"):
        cairn.reproduce(bundle, home=tmp_path / "h")


def test_reproduce_needs_a_fresh_home_and_the_sources(bundle: Path, tmp_path: Path) -> None:
    import cairn

    used = tmp_path / "used"
    (used / "store").mkdir(parents=True)
    with pytest.raises(CairnError, match="not empty: a reproduction needs a fresh Cairn home"):
        cairn.reproduce(bundle, home=used, ignore_versions=True)
    with pytest.raises(CairnError, match=r"\./data/corpus\.txt.*pass --sources DIR"):
        cairn.reproduce(bundle, home=tmp_path / "h", ignore_versions=True)


def test_reproduce_names_a_changed_source_file_and_stops(
    bundle: Path, chain: dict, tmp_path: Path
) -> None:
    import cairn

    checkout = tmp_path / "checkout"
    (checkout / "data").mkdir(parents=True)
    (checkout / "data" / "corpus.txt").write_text("To be, or not to be: that is the question.\n")
    report = cairn.reproduce(bundle, home=tmp_path / "h", sources=checkout, ignore_versions=True)
    assert not report.ok and report.run_id is None and report.stopped
    first = report.first_difference
    assert first is not None and first.name == "./data/corpus.txt"
    assert first.differs == ["corpus.txt (changed)"] and first.origin == "--sources"
    assert "torch" in report.versions  # reported, not refused, with --ignore-versions
