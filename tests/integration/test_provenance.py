"""Provenance anyone can check (issue 15): content digests survive a moved checkout, releases
carry no path of the machine that made them, and `cairn reproduce` recomputes a release."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from cairn.workflow import load_workflow
from tests.integration.conftest import Trail

LIVE = {"endpoint"}  # serve's result is a running server: live state, not content


def test_a_moved_checkout_hits_the_cache_with_the_same_digests(
    trail: Trail, tmp_path: Path
) -> None:
    moved = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(
        trail.folder, moved, ignore=lambda d, names: ["home"] if Path(d) == trail.folder else []
    )
    result = trail.engine().run(load_workflow(moved / "lifecycle.yaml"))
    assert result.ok, {n: s.error for n, s in result.steps.items()}
    for name, step in result.steps.items():
        if name in LIVE:
            continue
        assert step.state == "cached", f"{name} recomputed after the checkout moved"
        before = {k: a.digest for k, a in trail.result.steps[name].artifacts.items()}
        assert {k: a.digest for k, a in step.artifacts.items()} == before, name


def test_a_release_names_no_path_of_the_machine_that_made_it(trail: Trail) -> None:
    local = [str(trail.folder), str(trail.home), str(Path.home()), str(trail.folder.parent)]
    found = []
    for p in sorted(trail.bundle.rglob("*")):
        if not p.is_file() or p.suffix in (".safetensors", ".bin", ".pt", ".npy"):
            continue
        text = p.read_bytes().decode("utf-8", errors="replace")
        found += [f"{p.relative_to(trail.bundle)}: {s}" for s in local if s in text]
    assert not found, found
    lineage = (trail.bundle / "lineage.json").read_text()
    assert '"./poems"' in lineage and '"./chat/sft.jsonl"' in lineage  # as the workflow wrote them


def test_reproduce_recomputes_the_release_bit_identical(trail: Trail, tmp_path: Path) -> None:
    """From the bundle alone (it carries its sources), in a fresh home: every data, model,
    checkpoint and eval artifact of the lineage is recomputed with its recorded digest."""
    import cairn

    report = cairn.reproduce(trail.bundle, home=tmp_path / "fresh")
    first = report.first_difference
    assert report.ok, (first and (first.name, first.differs), report.audit_problems)
    steps = {a.name for a in report.artifacts if not a.origin}
    assert {"corpus.dataset", "model.model", "chat.model", "aligned.model"} <= steps
    assert "scores.eval_report" in steps
    assert {a.origin for a in report.artifacts if a.origin} == {"bundle"}
    assert not (tmp_path / "fresh" / "store" / "serve").exists()  # only what the release needs


def test_reproduce_names_a_changed_byte_of_a_carried_source(trail: Trail, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(trail.bundle, copy)
    data = copy / "sources" / "chat" / "dpo.jsonl"
    raw = bytearray(data.read_bytes())
    raw[10] = ord("X") if raw[10] != ord("X") else ord("Y")
    data.write_bytes(bytes(raw))

    proc = subprocess.run(
        [sys.executable, "-m", "cairn", "reproduce", str(copy), "--json"],
        capture_output=True,
        text=True,
        env=trail.env(),
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["first_difference"] == "./chat/dpo.jsonl"
    first = next(a for a in report["artifacts"] if not a["same"])
    assert first["differs"] == ["dpo.jsonl (changed)"]
    assert any("sources/chat/dpo.jsonl" in p for p in report["audit_problems"])
    assert report["run_id"] is None and "--allow-changed-sources" in report["stopped"]
