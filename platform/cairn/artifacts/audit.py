"""`cairn audit PATH`: verify a release bundle with nothing but the bundle.

Checks, each reported with the files it names:
- checksums: every file listed in SHA256SUMS is present and matches; no file is unlisted; the
  bundle holds only regular files and directories (a symbolic link, pointing anywhere, or a FIFO
  is a failure: see below);
- seal: given a release artifact in Cairn's store (the bundle is the one directory inside it),
  the store's manifest.json matches the files too;
- lineage: every manifest in lineage/ lists files with its (content) digest and hashes to the
  provenance digest lineage.json records for it, every parent it names is present with that digest
  and type, the graph ends in raw sources, and lineage.json's edges are the manifests';
- copies: each file copied out of an artifact (model, checkpoints, data, logs, evals) matches
  that artifact's manifest, and the model and checkpoints are complete;
- evals: each evaluation report names this model's digest;
- provenance: the SLSA statement, when the bundle has one, names every file with its sha256 and
  the sources lineage.json records (`provenance.py`);
- signature: when the bundle is signed (`release.sig`, the one file SHA256SUMS may not list) the
  files it signs are the bundle's, and with a public key model-signing verifies it (`signing.py`);
- model: the model loads with transformers and generates.
The release's identity is the sha256 of its SHA256SUMS, printed so it can be compared with the
published one.

A bundle is untrusted input and is judged on its own files only (`confined.py` reads it): a link,
a path in SHA256SUMS or lineage.json that leaves the bundle, a file of the wrong shape — each is a
failed check naming the file and why, never a traceback, a hang, or a read outside the bundle.
Links are refused wherever they point, inside the bundle too: the release stage copies every file,
so it never writes one, and a link's bytes are not the bundle's own (copying or archiving the
bundle may drop or re-point it, so what was verified would not be what is published).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

from cairn.artifacts import provenance, signing
from cairn.artifacts.confined import Folder, Opt, Refused, Values, parse_json, path_problem, shown
from cairn.results import AuditReport, Check
from cairn.stage.files import MANIFEST, artifact_digest, manifest_digest, manifest_problem

SUMS = "SHA256SUMS"
LINEAGE = "lineage.json"
INDEX = "checkpoints/index.json"
# A line of sha256sum's output, in text or binary mode; the release writes "<hex>  <path>".
_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.*)", re.DOTALL)

# What the audit reads of each JSON file (see `confined.misfit`); other fields are free.
_FILE = {"path": str, "sha256": str}
_PARENT = {"digest": str, "type": str, "slot": Opt(str)}
_MANIFEST = {
    "type": str,
    "files": [_FILE],
    "parents": Opt([_PARENT]),
    "metadata": Opt({"model_digest": Opt(str)}),
}
_SEALED = {"files": [{"path": str, "sha256": str, "size": int}]}
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


def audit(path: str | Path, load_model: bool = True, public_key: Path | None = None) -> AuditReport:
    """Verify the release bundle at `path`; never raises for a bad bundle (it reports it). With
    `public_key`, the bundle must be signed by its private key."""
    root = Path(path)
    seal = None
    if not os.path.lexists(root / SUMS) and _is_regular(root / MANIFEST):
        inner = _inner_bundles(root)
        if len(inner) == 1:
            # A release artifact in Cairn's store: its bundle is the one directory inside it.
            seal, _ = _against_manifest(Folder(root), "seal")
            root = inner[0]
    report = AuditReport(str(root), [seal] if seal else [])
    if not os.path.lexists(root / SUMS):
        if os.path.lexists(root / MANIFEST):  # a plain artifact: re-hash it against its manifest
            check, report.bundle_digest = _against_manifest(Folder(root), "artifact")
            report.checks.append(check)
            if public_key is not None:
                report.checks.append(
                    Check("signature", [f"{root}: one artifact, not a release bundle: not signed"])
                )
            return report
        report.checks.append(
            Check(
                "checksums",
                [f"{SUMS}: missing — {root} is neither a Cairn release bundle nor an artifact"],
            )
        )
        return report
    _audit_bundle(Folder(root), report, load_model, public_key)
    return report


def _audit_bundle(
    bundle: Folder, report: AuditReport, load_model: bool, public_key: Path | None
) -> None:
    lineage, manifests, lineage_check = _lineage(bundle)
    check = Check("checksums")
    try:
        sums: bytes | None = bundle.read(SUMS)
    except Refused as e:
        sums = None
        if SUMS not in bundle.odd:  # a link or a FIFO is named below, with the bundle's others
            check.problems.append(str(e))
    if sums is not None:
        report.bundle_digest = hashlib.sha256(sums).hexdigest()
        _checksums(bundle, sums, _recorded_elsewhere(lineage, manifests), check)
    check.problems += [f"{shown(rel)}: {what}" for rel, what in sorted(bundle.odd.items())]
    report.checks += [check, lineage_check]
    if lineage is not None:
        report.model_digest = lineage["release"]["model"]
        report.checks.append(_copies(bundle, lineage, manifests))
        report.checks.append(_evals(bundle, lineage, manifests))
    unsubjected = {SUMS, signing.SIGNATURE}
    for found in (
        provenance.check(bundle, lineage, manifests, unsubjected),
        signing.check(bundle, public_key),
    ):
        if found is not None:
            report.checks.append(found)
    if load_model:
        report.checks.append(_model(bundle))


def _is_regular(p: Path) -> bool:
    try:
        return stat.S_ISREG(p.lstat().st_mode)
    except OSError:
        return False


def _inner_bundles(root: Path) -> list[Path]:
    """The directories (not links to one) directly in `root` that hold a SHA256SUMS."""
    try:
        with os.scandir(root) as it:
            return [
                Path(d.path)
                for d in it
                if d.is_dir(follow_symlinks=False) and os.path.lexists(Path(d.path) / SUMS)
            ]
    except OSError:
        return []


def _against_manifest(folder: Folder, name: str) -> tuple[Check, str | None]:
    """A store artifact's files against its manifest.json (the store's seal), and the
    manifest's digest."""
    check = Check(name)
    try:
        data = folder.read(MANIFEST)
    except Refused as e:
        check.problems.append(str(e))
        return check, None
    try:
        digest: str | None = artifact_digest(data)
    except ValueError:
        digest = None  # parse_json below says what is wrong with it
    check.problems += [f"{shown(rel)}: {what}" for rel, what in sorted(folder.odd.items())]
    try:
        files = parse_json(MANIFEST, data, _SEALED)["files"]
    except Refused as e:
        check.problems.append(str(e))
        return check, digest
    for i, f in enumerate(files):
        if problem := folder.not_a_file(f["path"], f"{MANIFEST}: files[{i}].path"):
            check.problems.append(problem)
        elif folder.files[f["path"]] != f["size"]:
            size = folder.files[f["path"]]
            check.problems.append(f"{shown(f['path'])}: size {size} != {f['size']}")
        elif _sha256(folder, f["path"], check) not in (None, f["sha256"]):
            check.problems.append(f"{shown(f['path'])}: sha256 mismatch")
    listed = {f["path"] for f in files}
    extra = sorted(folder.files.keys() - listed - {MANIFEST})
    check.problems += [f"{shown(rel)}: not in manifest" for rel in extra]
    check.detail = (
        f"store artifact {str(digest)[:16]}… intact"
        if name == "seal"
        else f"files match {MANIFEST}"
    )
    return check, digest


def _sha256(folder: Folder, rel: str, check: Check) -> str | None:
    """The file's sha256, or None with the reason added to `check` (it was replaced while the
    audit ran, or could not be read)."""
    try:
        return folder.sha256(rel)
    except Refused as e:
        check.problems.append(str(e))
        return None


def _recorded_elsewhere(
    lineage: dict[str, Any] | None, manifests: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """sha256 of bundle files as recorded outside SHA256SUMS (a manifest's own digest, an
    artifact's file entry): when a file matches these but not SHA256SUMS, SHA256SUMS changed."""
    known: dict[str, str] = {}
    for entry in (lineage or {}).get("nodes", []):
        known[entry["manifest"]] = entry["digest"]
        files = {
            f["path"]: f["sha256"] for f in manifests.get(entry["digest"], {}).get("files", [])
        }
        for path, rel in (entry.get("copies") or {}).items():
            if path in files:
                known[rel] = files[path]
    return known


def _listed(sums: bytes, check: Check) -> dict[str, str]:
    """SHA256SUMS as {path: sha256}; a line that is malformed, or names a path that could not be
    a file of the bundle, is a problem and is not read further."""
    listed: dict[str, str] = {}
    lines = sums.split(b"\n")
    if lines[-1] == b"":  # the newline that ends the last line
        lines.pop()
    for n, raw in enumerate(lines, 1):
        where = f"{SUMS} line {n}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            check.problems.append(f"{where}: not UTF-8 (byte 0x{raw[e.start]:02x})")
            continue
        match = _SUMS_LINE.fullmatch(line)
        if match is None:
            check.problems.append(
                f"{where}: malformed ({line[:60]!r}); expected '<sha256 in hex>  <path>'"
            )
            continue
        digest, rel = match[1].lower(), match[2]
        if problem := path_problem(rel):
            check.problems.append(f"{where}: {shown(rel)} {problem}; not read")
        elif rel in listed:
            check.problems.append(f"{where}: lists {shown(rel)} a second time")
        else:
            listed[rel] = digest
    return listed


def _checksums(bundle: Folder, sums: bytes, known: dict[str, str], check: Check) -> None:
    listed = _listed(sums, check)
    # The signature signs SHA256SUMS, so it cannot be listed there.
    unlisted = sorted(bundle.files.keys() - listed.keys() - {SUMS, signing.SIGNATURE})
    for rel, digest in sorted(listed.items()):
        if rel in bundle.odd:
            continue  # a link or special file: reported once, as what it is
        if problem := bundle.not_a_file(rel, SUMS):
            # A listed name with an unlisted file beside it whose sha256 is the listed one:
            # the name in SHA256SUMS changed, not the bundle.
            missing = problem.endswith(": missing")
            renamed = [u for u in unlisted if missing and _sha256(bundle, u, check) == digest]
            check.problems.append(
                f"{SUMS}: lists {shown(rel)}, which is not in the bundle "
                f"({shown(renamed[0])} has its sha256)"
                if renamed
                else problem
            )
        elif (actual := _sha256(bundle, rel, check)) not in (None, digest):
            check.problems.append(
                f"{SUMS}: wrong sha256 for {rel} (the file matches its artifact's record)"
                if known.get(rel) == actual
                else f"{rel}: sha256 mismatch (file changed)"
            )
    check.problems += [f"{shown(rel)}: not listed in {SUMS}" for rel in unlisted]
    check.detail = f"{len(listed)} files"


def _lineage(bundle: Folder) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]], Check]:
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
        if not m.get("parents") and m["type"] != "raw":
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
    check.detail = f"{len(manifests)} artifacts, {len(edges)} edges, {raw} raw sources"
    return lineage, manifests, check


def _copies(bundle: Folder, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
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
            elif _sha256(bundle, rel, check) not in (None, files[path]):
                check.problems.append(
                    f"{rel}: differs from {path} in the manifest of {entry['digest'][:12]}"
                )
    model = lineage["release"]["model"]
    if model in manifests:
        copies = next(e for e in lineage["nodes"] if e["digest"] == model).get("copies") or {}
        for f in manifests[model]["files"]:
            if not f["path"].startswith("checkpoints/") and f["path"] not in copies:
                check.problems.append(f"model/{f['path']}: missing from the release")
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


def _evals(bundle: Folder, lineage: dict[str, Any], manifests: dict[str, dict[str, Any]]) -> Check:
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
    reports = sorted(r for r in bundle.files if re.fullmatch(r"evals/[^/]+/report\.json", r))
    for rel in reports:
        try:
            report = parse_json(rel, bundle.read(rel), _REPORT)
        except Refused as e:
            check.problems.append(str(e))
            continue
        said = (report.get("model") or {}).get("digest")
        if said != model:
            check.problems.append(f"{rel}: scores model {str(said)[:12]}, not {model[:12]}")
    check.detail = f"{len(evals)} report(s) refer to model {model[:12]}"
    return check


def _model(bundle: Folder) -> Check:
    check = Check("model")
    # transformers would follow a link in model/ out of the bundle: such a model is not loaded.
    odd = [rel for rel in sorted(bundle.odd) if rel == "model" or rel.startswith("model/")]
    if odd:
        check.problems.append(
            f"model/: not loaded, because {shown(odd[0])} is not a regular file (see checksums)"
        )
        return check
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the report is the output

        tok = AutoTokenizer.from_pretrained(bundle.root / "model")
        # safetensors only: a bundle is untrusted, and a .bin checkpoint is a pickle
        model = AutoModelForCausalLM.from_pretrained(bundle.root / "model", use_safetensors=True)
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
