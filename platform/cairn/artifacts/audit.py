"""`cairn audit PATH`: verify a release bundle with nothing but the bundle.

Checks, each reported with the files it names:
- checksums: every file listed in SHA256SUMS is present and matches; no file is unlisted;
- seal: given a release artifact in Cairn's store (the bundle is the one directory inside it),
  the store's manifest.json matches the files too;
- lineage: every manifest in lineage/ hashes to its digest, every parent it names is present with
  that digest and type, the graph ends in raw sources, and lineage.json's edges are the manifests';
- copies: each file copied out of an artifact (model, checkpoints, data, logs, evals) matches
  that artifact's manifest, and the model and checkpoints are complete;
- evals: each evaluation report names this model's digest;
- model: the model loads with transformers and generates.
The release's identity is the sha256 of its SHA256SUMS, printed so it can be compared with the
published one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cairn.artifacts.store import ArtifactStore
from cairn.results import AuditReport, Check
from cairn.stage.files import MANIFEST, sha256_file

SUMS = "SHA256SUMS"


def audit(path: str | Path, load_model: bool = True) -> AuditReport:
    """Verify the release bundle at `path`; never raises for a bad bundle (it reports it)."""
    root = Path(path)
    seal = None
    inner = [d for d in root.iterdir() if (d / SUMS).is_file()] if root.is_dir() else []
    if not (root / SUMS).is_file() and (root / MANIFEST).is_file() and len(inner) == 1:
        # A release artifact in Cairn's store: its bundle is the one directory inside it.
        seal, root = _seal(root), inner[0]
    report = AuditReport(str(root), [seal] if seal else [])
    if not (root / SUMS).is_file():
        if (root / MANIFEST).is_file():  # a plain artifact: re-hash it against its manifest
            problems = ArtifactStore(root.parent).verify(str(root))
            report.bundle_digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
            report.checks.append(Check("artifact", problems, "files match manifest.json"))
            return report
        report.checks.append(
            Check(
                "checksums",
                [f"{SUMS}: missing — {root} is neither a Cairn release bundle nor an artifact"],
            )
        )
        return report
    report.bundle_digest = sha256_file(root / SUMS)
    lineage, nodes, lineage_check = _lineage(root)
    report.checks.append(_checksums(root, _recorded_elsewhere(lineage, nodes)))
    report.checks.append(lineage_check)
    if lineage is not None:
        report.model_digest = lineage.get("release", {}).get("model")
        report.checks.append(_copies(root, lineage, nodes))
        report.checks.append(_evals(root, lineage, nodes))
    if load_model:
        report.checks.append(_model(root))
    return report


def _recorded_elsewhere(
    lineage: dict[str, Any] | None, manifests: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """sha256 of bundle files as recorded outside SHA256SUMS (a manifest's own digest, an
    artifact's file entry): when a file matches these but not SHA256SUMS, SHA256SUMS changed."""
    known: dict[str, str] = {}
    for entry in (lineage or {}).get("nodes", []):
        known[entry.get("manifest", "")] = entry["digest"]
        files = {
            f["path"]: f["sha256"] for f in manifests.get(entry["digest"], {}).get("files", [])
        }
        for path, rel in (entry.get("copies") or {}).items():
            if path in files:
                known[rel] = files[path]
    return known


def _checksums(root: Path, known: dict[str, str]) -> Check:
    check = Check("checksums")
    listed: dict[str, str] = {}
    for n, line in enumerate((root / SUMS).read_text(errors="replace").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            check.problems.append(f"{SUMS} line {n}: malformed ({line[:60]!r})")
            continue
        listed[rel] = digest
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {SUMS}
    unlisted = sorted(on_disk - set(listed))
    for rel, digest in sorted(listed.items()):
        p = root / rel
        if not p.is_file():
            # A listed name with an unlisted file beside it whose sha256 is the listed one:
            # the name in SHA256SUMS changed, not the bundle.
            renamed = [u for u in unlisted if sha256_file(root / u) == digest]
            check.problems.append(
                f"{SUMS}: lists {rel}, which is not in the bundle ({renamed[0]} has its sha256)"
                if renamed
                else f"{rel}: missing"
            )
        elif (actual := sha256_file(p)) != digest:
            check.problems.append(
                f"{SUMS}: wrong sha256 for {rel} (the file matches its artifact's record)"
                if known.get(rel) == actual
                else f"{rel}: sha256 mismatch (file changed)"
            )
    check.problems += [f"{rel}: not listed in {SUMS}" for rel in unlisted]
    check.detail = f"{len(listed)} files"
    return check


def _seal(root: Path) -> Check:
    """The store's seal around a release artifact: its files must match its manifest.json."""
    problems = ArtifactStore(root.parent).verify(str(root))
    digest = hashlib.sha256((root / MANIFEST).read_bytes()).hexdigest()
    return Check("seal", problems, f"store artifact {digest[:16]}… intact")


def _lineage(root: Path) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], Check]:
    check = Check("lineage")
    try:
        lineage = json.loads((root / "lineage.json").read_text())
        entries = {n["digest"]: n for n in lineage["nodes"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        check.problems.append(f"lineage.json: unreadable ({e})")
        return None, {}, check
    manifests: dict[str, dict[str, Any]] = {}
    for digest, entry in entries.items():
        rel = entry.get("manifest", "")
        p = root / rel
        if not p.is_file():
            check.problems.append(f"{rel}: missing (manifest of {entry.get('type')} {digest[:12]})")
            continue
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            check.problems.append(f"{rel}: does not hash to its digest {digest[:12]}")
            continue
        manifests[digest] = json.loads(data)
        if manifests[digest].get("type") != entry.get("type"):
            check.problems.append(f"{rel}: type differs from lineage.json")
    edges = []
    for digest, m in manifests.items():
        for parent in m.get("parents") or []:
            edges.append(
                {"parent": parent["digest"], "child": digest, "slot": parent.get("slot", "")}
            )
            if parent["digest"] not in manifests:
                check.problems.append(
                    f"{entries[digest]['manifest']}: parent {parent['type']} "
                    f"{parent['digest'][:12]} is not in the release"
                )
            elif manifests[parent["digest"]].get("type") != parent["type"]:
                check.problems.append(
                    f"{entries[digest]['manifest']}: parent {parent['digest'][:12]} has the wrong type"
                )
        if not m.get("parents") and m.get("type") != "raw":
            check.problems.append(
                f"{entries[digest]['manifest']}: a {m.get('type')} with no parents — the graph "
                "does not reach raw sources"
            )
    listed = sorted((e["child"], e["slot"], e["parent"]) for e in lineage.get("edges", []))
    actual = sorted((e["child"], e["slot"], e["parent"]) for e in edges)
    if listed != actual:
        check.problems.append("lineage.json: edges differ from the manifests' parent links")
    release = lineage.get("release") or {}
    for digest in [release.get("model"), *(release.get("evals") or [])]:
        if digest not in manifests:
            check.problems.append(
                f"lineage.json: released artifact {str(digest)[:12]} has no manifest"
            )
    raw = sum(1 for m in manifests.values() if m.get("type") == "raw")
    check.detail = f"{len(manifests)} artifacts, {len(edges)} edges, {raw} raw sources"
    return lineage, manifests, check


def _copies(root: Path, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
    check = Check("copies")
    n = 0
    for entry in lineage["nodes"]:
        m = manifests.get(entry["digest"])
        if m is None:
            continue
        files = {f["path"]: f["sha256"] for f in m["files"]}
        for path, rel in sorted((entry.get("copies") or {}).items()):
            n += 1
            p = root / rel
            if path not in files:
                check.problems.append(
                    f"{rel}: claims to be {path} of {entry['digest'][:12]}, which has no such file"
                )
            elif not p.is_file():
                check.problems.append(
                    f"{rel}: missing ({path} of {entry['type']} {entry['digest'][:12]})"
                )
            elif sha256_file(p) != files[path]:
                check.problems.append(
                    f"{rel}: differs from {path} in the manifest of {entry['digest'][:12]}"
                )
    model = manifests.get(lineage["release"]["model"])
    if model is not None:
        copies = next(e for e in lineage["nodes"] if e["digest"] == lineage["release"]["model"])
        for f in model["files"]:
            if not f["path"].startswith("checkpoints/") and f["path"] not in copies.get(
                "copies", {}
            ):
                check.problems.append(f"model/{f['path']}: missing from the release")
    index_path = root / "checkpoints" / "index.json"
    try:
        index = json.loads(index_path.read_text()) if index_path.is_file() else []
    except ValueError as e:
        check.problems.append(f"checkpoints/index.json: unreadable ({e})")
        index = []
    for c in index:
        for f in c["files"] if c.get("copied") else []:
            rel = f"{c['bundle_path']}/{f['path'][len(c['path_in_artifact']) + 1 :]}"
            if not (root / rel).is_file():
                check.problems.append(f"{rel}: missing (checkpoint at step {c['step']})")
    check.detail = f"{n} copied files match their artifacts' manifests"
    return check


def _evals(root: Path, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
    check = Check("evals")
    model = lineage["release"]["model"]
    evals = lineage["release"].get("evals") or []
    for digest in evals:
        m = manifests.get(digest)
        if m is None:
            continue
        evaluated = [p["digest"] for p in m.get("parents") or [] if p["type"] == "model"]
        if evaluated != [model]:
            check.problems.append(
                f"eval report {digest[:12]} evaluated {', '.join(d[:12] for d in evaluated)}, "
                f"not this model {model[:12]}"
            )
        said = (m.get("metadata") or {}).get("model_digest")
        if said not in (None, model):
            check.problems.append(f"eval report {digest[:12]} says it scored model {said[:12]}")
    for report in sorted(root.glob("evals/*/report.json")):
        try:
            said = json.loads(report.read_text()).get("model", {}).get("digest")
        except (ValueError, AttributeError):
            check.problems.append(f"{report.relative_to(root)}: unreadable")
            continue
        if said != model:
            check.problems.append(
                f"{report.relative_to(root)}: scores model {str(said)[:12]}, not {model[:12]}"
            )
    check.detail = f"{len(evals)} report(s) refer to model {model[:12]}"
    return check


def _model(root: Path) -> Check:
    check = Check("model")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the report is the output

        tok = AutoTokenizer.from_pretrained(root / "model")
        model = AutoModelForCausalLM.from_pretrained(root / "model")
        ids = tok("The", return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=4, do_sample=False)  # type: ignore[misc]
        check.detail = (
            f"{sum(p.numel() for p in model.parameters()):,} parameters; "
            f"generates {tok.decode(out[0][ids.shape[1] :])!r}"
        )
    except Exception as e:  # any failure to load is the finding, reported with its cause
        check.problems.append(f"model/: does not load ({type(e).__name__}: {e})")
    return check
