"""`cairn audit PATH`: verify a release bundle with nothing but the bundle.

Checks, each reported with the files it names:
- checksums: every file listed in SHA256SUMS is present and matches; no file is unlisted; the
  bundle holds only regular files and directories (a symbolic link, pointing anywhere, or a FIFO
  is a failure: see below);
- seal: given a release artifact in Cairn's store (the bundle is the one directory inside it),
  the store's manifest.json matches the files too;
- lineage: every manifest in lineage/ lists files with its (content) digest and hashes to the
  provenance digest lineage.json records for it, every parent it names is present with that digest
  and type, the graph ends in raw sources (or models imported from outside), and lineage.json's
  edges are the manifests';
- copies: each file copied out of an artifact (model, checkpoints, LoRA adapters, data, logs,
  evals) matches that artifact's manifest, and the model, adapters and checkpoints are complete;
- evals: each evaluation report names this model's digest (lineage, copies and evals are
  `lineage_checks.py`);
- provenance: the SLSA statement, when the bundle has one, names every file with its sha256 and
  the sources lineage.json records (`provenance.py`);
- signature: when the bundle is signed (`release.sig`, the one file SHA256SUMS may not list) the
  files it signs are the bundle's, and with a public key model-signing verifies it (`signing.py`);
- model: the model loads with transformers and generates.
The release's identity is the sha256 of its SHA256SUMS, printed so it can be compared with the
published one.

A bundle on an object store (`cairn audit s3://bucket/cairn/release/...`, any fsspec URI) is
downloaded first, file by file, into a private temporary folder, and that copy is audited: what is
checked is exactly the bytes a reader of the store gets, and the confined reading below stays the
one way a bundle is read. A key that would land outside the folder (`..`, an absolute path) is
refused before anything is written.

A bundle is untrusted input and is judged on its own files only (`confined.py` reads it): a link,
a path in SHA256SUMS or lineage.json that leaves the bundle, a file of the wrong shape — each is a
failed check naming the file and why, never a traceback, a hang, or a read outside the bundle.
Links are refused wherever they point, inside the bundle too: the release stage copies every file,
so it never writes one, and a link's bytes are not the bundle's own (copying or archiving the
bundle may drop or re-point it, so what was verified would not be what is published).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cairn.artifacts import lineage_checks, provenance, signing
from cairn.artifacts.confined import Folder, Refused, parse_json, path_problem, shown
from cairn.artifacts.lineage_checks import file_sha256
from cairn.errors import CairnError
from cairn.results import AuditReport, Check
from cairn.stage.files import MANIFEST, artifact_digest

SUMS = "SHA256SUMS"
# A line of sha256sum's output, in text or binary mode; the release writes "<hex>  <path>".
_SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.*)", re.DOTALL)
# What the audit reads of a sealed manifest (see `confined.misfit`); other fields are free.
_SEALED = {"files": [{"path": str, "sha256": str, "size": int}]}


def audit(path: str | Path, load_model: bool = True, public_key: Path | None = None) -> AuditReport:
    """Verify the release bundle at `path` (a folder, or a URI such as s3://...); never raises
    for a bad bundle (it reports it). With `public_key`, the bundle must be signed by its
    private key."""
    if not is_uri(path):
        return _audit_folder(Path(path), load_model, public_key)
    uri = str(path).rstrip("/")
    with _downloaded(uri) as (local, problems):
        if problems:
            return AuditReport(uri, [Check("checksums", problems)])
        report = _audit_folder(local, load_model, public_key)
    # The report names the URI, never the temporary copy it was read from.
    here = str(local)
    report.path = report.path.replace(here, uri, 1)
    for check in report.checks:
        check.problems = [p.replace(here, uri) for p in check.problems]
    return report


def is_uri(path: str | Path) -> bool:
    """Whether `path` names a bundle by URI (s3://...), which the audit downloads first."""
    return isinstance(path, str) and "://" in path


@contextlib.contextmanager
def _downloaded(uri: str) -> Iterator[tuple[Path, list[str]]]:
    """The folder at `uri` copied into a private temporary folder, with the problems that kept
    it from being copied (the audit reports them instead of checking anything)."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise CairnError(
            f"cannot read {uri}: {e}; fix: install the filesystem package its scheme needs "
            "(s3:// comes with Cairn's s3 extra: pip install -e '.[s3]')"
        ) from None
    local = Path(tempfile.mkdtemp(prefix="cairn-audit-"))
    try:
        yield local, _copy_tree(fs, root.rstrip("/"), uri, local)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _copy_tree(fs: Any, root: str, uri: str, dest: Path) -> list[str]:
    try:
        if fs.isfile(root):
            return [f"{uri}: a file, not a release bundle (give the bundle's folder)"]
        found = fs.find(root, detail=True)
    except (OSError, ValueError) as e:  # unreachable server, denied, malformed bucket name
        return [f"{uri}: cannot be listed ({type(e).__name__}: {e})"]
    if not found:
        return [f"{uri}: no such bundle (nothing is stored under it)"]
    files = {}
    for name, info in found.items():
        if info.get("type", "file") != "file":  # a folder marker: its files say what it holds
            continue
        rel = name[len(root) + 1 :] if name.startswith(root + "/") else name
        if problem := path_problem(rel):
            return [f"{uri}: the stored key {shown(rel)} {problem}: refused before download"]
        files[rel] = name
    for rel, name in sorted(files.items()):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(name, str(target))
    return []


def _audit_folder(root: Path, load_model: bool, public_key: Path | None) -> AuditReport:
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
    lineage, manifests, lineage_check = lineage_checks.lineage(bundle)
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
        report.checks.append(lineage_checks.copies(bundle, lineage, manifests))
        report.checks.append(lineage_checks.evals(bundle, lineage, manifests))
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
        elif file_sha256(folder, f["path"], check) not in (None, f["sha256"]):
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
            renamed = [u for u in unlisted if missing and file_sha256(bundle, u, check) == digest]
            check.problems.append(
                f"{SUMS}: lists {shown(rel)}, which is not in the bundle "
                f"({shown(renamed[0])} has its sha256)"
                if renamed
                else problem
            )
        elif (actual := file_sha256(bundle, rel, check)) not in (None, digest):
            check.problems.append(
                f"{SUMS}: wrong sha256 for {rel} (the file matches its artifact's record)"
                if known.get(rel) == actual
                else f"{rel}: sha256 mismatch (file changed)"
            )
    check.problems += [f"{shown(rel)}: not listed in {SUMS}" for rel in unlisted]
    check.detail = f"{len(listed)} files"


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
