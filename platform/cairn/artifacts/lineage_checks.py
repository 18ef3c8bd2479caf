"""The audit's checks of what a bundle says about where it came from: `lineage.json` and the
manifests in `lineage/` (lineage), the files it copied out of each artifact (copies, the
checkpoint index included) and the eval reports (evals). `audit.py` runs them with the checks of
the bundle's own files (checksums, seal, provenance, signature, model).

Every file is read through `confined.Folder` (the bundle is untrusted); each problem names the
file, and the field where it is one.
"""

from __future__ import annotations

import os
import re
from typing import Any

from cairn.artifacts.confined import Folder, Opt, Refused, Values, parse_json, shown
from cairn.results import Check
from cairn.stage.files import manifest_digest, manifest_problem
from cairn.stage.lineage import models_above

LINEAGE = "lineage.json"
INDEX = "checkpoints/index.json"

# What the audit reads of each JSON file (see `confined.misfit`); other fields are free.
_FILE = {"path": str, "sha256": str}
_PARENT = {"digest": str, "type": str, "slot": Opt(str)}
_MANIFEST = {
    "type": str,
    "files": [_FILE],
    "parents": Opt([_PARENT]),
    "metadata": Opt({"model_digest": Opt(str)}),
}
_LINEAGE = {
    "release": {"model": str, "evals": Opt([str])},
    "nodes": [
        {
            "digest": str,
            "type": str,
            "manifest": str,
            "manifest_sha256": Opt(str),
            "copies": Opt(Values(str)),
        }
    ],
    "edges": Opt([{"parent": str, "child": str, "slot": Opt(str)}]),
}
_INDEX = [
    {
        "step": Opt(int),
        "copied": Opt(bool),
        "bundle_path": Opt(str),
        "path_in_artifact": str,
        "files": [{"path": str}],
    }
]
_REPORT = {"model": Opt({"digest": Opt(str)})}


def file_sha256(folder: Folder, rel: str, check: Check) -> str | None:
    """The file's sha256, or None with the reason added to `check` (it was replaced while the
    audit ran, or could not be read)."""
    try:
        return folder.sha256(rel)
    except Refused as e:
        check.problems.append(str(e))
        return None


def lineage(bundle: Folder) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], Check]:
    check = Check("lineage")
    try:
        lineage: dict[str, Any] = parse_json(LINEAGE, bundle.read(LINEAGE), _LINEAGE)
    except Refused as e:
        check.problems.append(str(e))
        return None, {}, check
    entries: dict[str, dict[str, Any]] = {}
    manifests: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(lineage["nodes"]):
        digest, rel = entry["digest"], entry["manifest"]
        if digest in entries:
            check.problems.append(f"{LINEAGE}: nodes[{i}] repeats artifact {digest[:12]}")
            continue
        entries[digest] = entry
        what = f"manifest of {entry['type']} {digest[:12]}"
        if problem := bundle.not_a_file(
            rel, f"{LINEAGE}: nodes[{i}].manifest", f"missing ({what})"
        ):
            check.problems.append(problem)
            continue
        try:
            data = bundle.read(rel)
        except Refused as e:
            check.problems.append(str(e))
            continue
        try:
            manifest = parse_json(rel, data, _MANIFEST)
        except Refused as e:
            check.problems.append(str(e))
            continue
        if problem := manifest_problem(data, digest):
            check.problems.append(f"{rel}: {problem}")
            continue
        if entry.get("manifest_sha256") not in (None, manifest_digest(data)):
            check.problems.append(f"{rel}: its provenance changed (not the manifest recorded)")
            continue
        manifests[digest] = manifest
        if manifests[digest]["type"] != entry["type"]:
            check.problems.append(f"{rel}: type differs from {LINEAGE}")
    edges = []
    for digest, m in manifests.items():
        rel = entries[digest]["manifest"]
        for parent in m.get("parents") or []:
            edges.append(
                {"parent": parent["digest"], "child": digest, "slot": parent.get("slot") or ""}
            )
            if parent["digest"] not in manifests:
                check.problems.append(
                    f"{rel}: parent {parent['type']} {parent['digest'][:12]} is not in the release"
                )
            elif manifests[parent["digest"]]["type"] != parent["type"]:
                check.problems.append(f"{rel}: parent {parent['digest'][:12]} has the wrong type")
        if not m.get("parents") and m["type"] != "raw" and not _imported(m):
            check.problems.append(
                f"{rel}: a {m['type']} with no parents — the graph does not reach raw sources"
            )
    listed = sorted(
        (e["child"], e.get("slot") or "", e["parent"]) for e in lineage.get("edges") or []
    )
    actual = sorted((e["child"], e["slot"], e["parent"]) for e in edges)
    if listed != actual:
        check.problems.append(f"{LINEAGE}: edges differ from the manifests' parent links")
    release = lineage["release"]
    for digest in [release["model"], *(release.get("evals") or [])]:
        if digest not in manifests:
            check.problems.append(f"{LINEAGE}: released artifact {digest[:12]} has no manifest")
    raw = sum(1 for m in manifests.values() if m["type"] == "raw")
    imported = sum(1 for m in manifests.values() if m["type"] == "model" and _imported(m))
    check.detail = f"{len(manifests)} artifacts, {len(edges)} edges, {raw} raw sources" + (
        f", {imported} imported model(s)" if imported else ""
    )
    return lineage, manifests, check


def _imported(manifest: dict[str, Any]) -> bool:
    """A model imported from outside (a directory given as a step's input) is a root of the
    graph like raw data: its manifest is the one Cairn made digesting it, which names it
    (`source`) and no producing step, and its files are checked like any source's copy."""
    return manifest["type"] == "model" and bool(manifest.get("source")) and not manifest.get("step")


def copies(bundle: Folder, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
    check = Check("copies")
    n = 0
    for i, entry in enumerate(lineage["nodes"]):
        m = manifests.get(entry["digest"])
        if m is None:
            continue
        files = {f["path"]: f["sha256"] for f in m["files"]}
        for path, rel in sorted((entry.get("copies") or {}).items()):
            n += 1
            if path not in files:
                check.problems.append(
                    f"{shown(rel)}: claims to be {shown(path)} of {entry['digest'][:12]}, which has no "
                    "such file"
                )
            elif problem := bundle.not_a_file(
                rel,
                f"{LINEAGE}: nodes[{i}].copies",
                f"missing ({path} of {entry['type']} {entry['digest'][:12]})",
            ):
                check.problems.append(problem)
            elif file_sha256(bundle, rel, check) not in (None, files[path]):
                check.problems.append(
                    f"{rel}: differs from {path} in the manifest of {entry['digest'][:12]}"
                )
    model = lineage["release"]["model"]
    if model in manifests:
        copies = next(e for e in lineage["nodes"] if e["digest"] == model).get("copies") or {}
        for f in manifests[model]["files"]:
            if not f["path"].startswith("checkpoints/") and f["path"] not in copies:
                check.problems.append(f"model/{f['path']}: missing from the release")
    # A LoRA adapter in the lineage is the release's record of a merge (base + adapter → model):
    # it is carried whole, like the model.
    for entry in lineage["nodes"]:
        m = manifests.get(entry["digest"])
        if m is None or m["type"] != "adapter":
            continue
        for f in m["files"]:
            if f["path"] not in (entry.get("copies") or {}):
                check.problems.append(
                    f"{shown(f['path'])} of adapter {entry['digest'][:12]}: missing from the "
                    "release"
                )
    for c in _checkpoint_index(bundle, check):
        for f in c["files"] if c.get("copied") else []:
            prefix = c["path_in_artifact"] + "/"
            if c.get("bundle_path") is None or not f["path"].startswith(prefix):
                check.problems.append(
                    f"{INDEX}: the checkpoint at step {c.get('step')} is copied, but its file "
                    f"{shown(f['path'])} has no place in the bundle (bundle_path, path_in_artifact)"
                )
                continue
            rel = f"{c['bundle_path']}/{f['path'][len(prefix) :]}"
            named_by = f"{INDEX}: the checkpoint at step {c.get('step')}"
            missing = f"missing (checkpoint at step {c.get('step')})"
            if problem := bundle.not_a_file(rel, named_by, missing):
                check.problems.append(problem)
    check.detail = f"{n} copied files match their artifacts' manifests"
    return check


def _checkpoint_index(bundle: Folder, check: Check) -> list[dict[str, Any]]:
    if not os.path.lexists(bundle.root / INDEX):
        return []  # no training step in the lineage kept checkpoints
    try:
        index: list[dict[str, Any]] = parse_json(INDEX, bundle.read(INDEX), _INDEX)
    except Refused as e:
        check.problems.append(str(e))
        return []
    return index


def evals(bundle: Folder, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
    check = Check("evals")
    model = lineage["release"]["model"]
    evals = lineage["release"].get("evals") or []
    # A report scores this model or one it was trained from (a before/after comparison).
    lineage_models = models_above(model, lambda d: (manifests.get(d) or {}).get("parents") or [])
    for digest in evals:
        m = manifests.get(digest)
        if m is None:
            continue
        evaluated = [p["digest"] for p in m.get("parents") or [] if p["type"] == "model"]
        if len(evaluated) != 1 or evaluated[0] not in lineage_models:
            check.problems.append(
                f"eval report {digest[:12]} evaluated {', '.join(d[:12] for d in evaluated)}, "
                f"neither this model {model[:12]} nor one of its lineage"
            )
            continue
        said = (m.get("metadata") or {}).get("model_digest")
        if said not in (None, evaluated[0]):
            check.problems.append(f"eval report {digest[:12]} says it scored model {said[:12]}")
    reports = sorted(r for r in bundle.files if re.fullmatch(r"evals/[^/]+/report\.json", r))
    for rel in reports:
        try:
            report = parse_json(rel, bundle.read(rel), _REPORT)
        except Refused as e:
            check.problems.append(str(e))
            continue
        said = (report.get("model") or {}).get("digest")
        if said not in lineage_models:
            check.problems.append(
                f"{rel}: scores model {str(said)[:12]}, neither {model[:12]} nor one of its lineage"
            )
    check.detail = f"{len(evals)} report(s) refer to model {model[:12]}"
    return check
