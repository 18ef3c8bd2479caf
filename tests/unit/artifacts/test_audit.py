"""`cairn audit` on hostile and malformed bundles: a verdict naming the file, never a traceback,
a hang, or a read outside the bundle.

The bundle is written by the real release stage from a small chain sealed in a real store
(raw source → dataset → model with one checkpoint → eval report) whose files are a few bytes
each, so it is shaped like a lifecycle's release and built in well under a second; the model is
not a real one, so these audits skip loading it (`load_model=False`) unless a test checks that
the load is refused. Each test copies the clean bundle, breaks it one way, and checks the
failing check's message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cairn import audit
from cairn.artifacts.store import ArtifactStore
from cairn.cli import app
from cairn.results import AuditReport


def _problems(report: AuditReport, check: str | None = None) -> list[str]:
    return [p for c in report.checks if check in (None, c.name) for p in c.problems]


def _sums_lines(bundle: Path) -> list[str]:
    return (bundle / "SHA256SUMS").read_text().splitlines()


def _write_sums(bundle: Path, lines: list[str]) -> None:
    (bundle / "SHA256SUMS").write_text("".join(f"{line}\n" for line in lines))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _relist(bundle: Path, rel: str) -> None:
    """Give `rel` its right sha256 in SHA256SUMS, as a forger would after changing it."""
    digest = _sha256((bundle / rel).read_bytes())
    _write_sums(
        bundle,
        [f"{digest}  {rel}" if line.endswith(f"  {rel}") else line for line in _sums_lines(bundle)],
    )


_opened: list[str] | None = None
_hooked = False


def _hook(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | bytes):
        _opened.append(os.fsdecode(args[0]))


@contextmanager
def opened() -> Iterator[list[str]]:
    """Every path the process opens inside the block (a Python audit hook sees them all)."""
    global _opened, _hooked
    if not _hooked:
        sys.addaudithook(_hook)  # hooks cannot be removed: one for the session, idle outside
        _hooked = True
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


def test_a_bundle_the_release_stage_writes_passes(clean: Path) -> None:
    report = audit(clean, load_model=False)
    assert report.ok, _problems(report)
    assert [c.name for c in report.checks] == [
        "checksums",
        "lineage",
        "copies",
        "evals",
        "provenance",
    ]
    assert {"checkpoints/index.json", "lineage.json", "model/config.json"} <= {
        line.split("  ", 1)[1] for line in _sums_lines(clean)
    }


# -- links and paths that leave the bundle -----------------------------------------------------


def test_a_listed_symlink_to_etc_passwd_fails_and_is_not_read(bundle: Path) -> None:
    target = bundle / "model" / "config.json"
    target.unlink()
    target.symlink_to("/etc/passwd")
    _relist(bundle, "model/config.json")  # SHA256SUMS lists the link with /etc/passwd's hash
    with opened() as paths:
        report = audit(bundle, load_model=True)
    assert not report.ok
    link = "model/config.json: a symbolic link (to '/etc/passwd'), not a file"
    assert any(p.startswith(link) for p in _problems(report, "checksums"))
    assert any(p.startswith(link) for p in _problems(report, "copies"))
    # The model is not handed to transformers, which would follow the link.
    assert _problems(report, "model") == [
        "model/: not loaded, because model/config.json is not a regular file (see checksums)"
    ]
    assert not [p for p in paths if p.endswith("passwd")]


def test_an_unlisted_symlink_inside_the_bundle_fails(bundle: Path) -> None:
    (bundle / "notes.md").symlink_to("README.md")  # pointing inside the bundle: still refused
    problems = _problems(audit(bundle, load_model=False), "checksums")
    assert problems == [
        "notes.md: a symbolic link (to 'README.md'), not a file: a bundle is judged on its own "
        "files, so links are not followed"
    ]


def test_a_linked_directory_is_not_entered(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    (bundle / "extra").symlink_to(outside)
    lines = _sums_lines(bundle) + [f"{_sha256(b's')}  extra/secret.txt"]
    _write_sums(bundle, lines)
    with opened() as paths:
        problems = _problems(audit(bundle, load_model=False), "checksums")
    assert any(p.startswith("extra: a symbolic link (to ") for p in problems)
    assert any(
        p == "extra/secret.txt: not read, because extra is not a directory" for p in problems
    )
    assert not [p for p in paths if "secret" in p]


def test_a_dotdot_entry_fails_even_when_the_file_outside_matches(bundle: Path) -> None:
    outside = bundle.parent / "outside.txt"
    outside.write_text("planted")
    _write_sums(bundle, [*_sums_lines(bundle), f"{_sha256(b'planted')}  ../outside.txt"])
    with opened() as paths:
        report = audit(bundle, load_model=False)
    assert not report.ok
    n = len(_sums_lines(bundle))
    assert _problems(report, "checksums") == [
        f"SHA256SUMS line {n}: ../outside.txt climbs out through '..', which leaves the bundle; "
        "not read"
    ]
    assert not [p for p in paths if p.endswith("outside.txt")]


def test_an_absolute_entry_fails_without_reading_it(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "planted.txt"
    outside.write_text("planted")
    _write_sums(bundle, [*_sums_lines(bundle), f"{_sha256(b'planted')}  {outside}"])
    with opened() as paths:
        problems = _problems(audit(bundle, load_model=False), "checksums")
    assert len(problems) == 1
    assert f"{outside} is an absolute path, which leaves the bundle; not read" in problems[0]
    assert problems[0].startswith("SHA256SUMS line ")
    assert str(outside) not in paths


def test_a_manifest_path_in_lineage_json_that_leaves_the_bundle_is_not_read(
    bundle: Path,
) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    lineage["nodes"][0]["manifest"] = "/etc/passwd"
    (bundle / "lineage.json").write_text(json.dumps(lineage))
    _relist(bundle, "lineage.json")
    with opened() as paths:
        problems = _problems(audit(bundle, load_model=False), "lineage")
    assert (
        "lineage.json: nodes[0].manifest: /etc/passwd is an absolute path, which leaves the "
        "bundle; not read"
    ) in problems
    assert "/etc/passwd" not in paths


# -- malformed SHA256SUMS ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not a checksum line", "malformed ('not a checksum line')"),
        (f"{'a' * 63}  README.md", "malformed"),
        (f"{'a' * 64}\tREADME.md", "malformed"),
        (f"{'g' * 64}  README.md", "malformed"),
        ("", "malformed ('')"),
        (f"{'a' * 64}  README.md\r", "'README.md\\r' holds a control character; not read"),
        (f"{'a' * 64}  model\x00/x", "'model\\x00/x' holds a control character; not read"),
        (f"{'a' * 64}  model//config.json", "is not a plain relative path"),
        (f"{'a' * 64}  ./README.md", "is not a plain relative path"),
        (f"{'a' * 64}  ", "'' is empty; not read"),
    ],
)
def test_a_malformed_sha256sums_line_is_named(bundle: Path, line: str, expected: str) -> None:
    lines = _sums_lines(bundle)
    _write_sums(bundle, [*lines, line])
    problems = _problems(audit(bundle, load_model=False), "checksums")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"SHA256SUMS line {len(lines) + 1}: ")
    assert expected in problems[0]


def test_a_sha256sums_line_that_is_not_utf8_is_named(bundle: Path) -> None:
    data = (bundle / "SHA256SUMS").read_bytes() + b"\xff\xfe  README.md\n"
    (bundle / "SHA256SUMS").write_bytes(data)
    problems = _problems(audit(bundle, load_model=False), "checksums")
    n = data.count(b"\n")
    assert problems == [f"SHA256SUMS line {n}: not UTF-8 (byte 0xff)"]


def test_a_name_with_a_trailing_space_is_shown_quoted(bundle: Path) -> None:
    _write_sums(bundle, [*_sums_lines(bundle), f"{'a' * 64}  README.md "])
    assert _problems(audit(bundle, load_model=False), "checksums") == ["'README.md ': missing"]


def test_a_path_listed_twice_is_named(bundle: Path) -> None:
    lines = _sums_lines(bundle)
    _write_sums(bundle, [*lines, lines[0]])
    rel = lines[0].split("  ", 1)[1]
    assert _problems(audit(bundle, load_model=False), "checksums") == [
        f"SHA256SUMS line {len(lines) + 1}: lists {rel} a second time"
    ]


def test_a_directory_listed_as_a_file_is_named(bundle: Path) -> None:
    _write_sums(bundle, [*_sums_lines(bundle), f"{'a' * 64}  model"])
    assert _problems(audit(bundle, load_model=False), "checksums") == [
        "model: a directory, not a file"
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_listed_fifo_is_not_opened(bundle: Path) -> None:
    """Reading a FIFO would wait for a writer forever: it must be refused, not hashed. The audit
    runs in a subprocess so that a regression fails on its timeout instead of hanging the run."""
    os.mkfifo(bundle / "pipe")
    _write_sums(bundle, [*_sums_lines(bundle), f"{'a' * 64}  pipe"])
    code = (
        "import json, sys; from cairn import audit; "
        "print(json.dumps(audit(sys.argv[1], load_model=False).to_dict()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["checksums"]["problems"] == ["pipe: a FIFO, not a regular file: not read"]


def test_a_sha256sums_that_is_a_symlink_is_not_followed(bundle: Path, tmp_path: Path) -> None:
    real = tmp_path / "sums"
    shutil.move(bundle / "SHA256SUMS", real)
    (bundle / "SHA256SUMS").symlink_to(real)
    with opened() as paths:
        report = audit(bundle, load_model=False)
    assert report.bundle_digest is None
    assert _problems(report, "checksums") == [
        f"SHA256SUMS: a symbolic link (to '{real}'), not a file: a bundle is judged on its own "
        "files, so links are not followed"
    ]
    assert str(real) not in paths


# -- missing and extra files -------------------------------------------------------------------


def test_a_missing_file_is_named(bundle: Path) -> None:
    (bundle / "DATA_CARD.md").unlink()
    report = audit(bundle, load_model=False)
    assert _problems(report, "checksums") == ["DATA_CARD.md: missing"]
    assert _problems(report, "provenance") == [
        "DATA_CARD.md: missing (a subject of provenance.intoto.json)"
    ]


def test_an_unlisted_file_fails(bundle: Path) -> None:
    """A bundle is judged on what it lists and holds: a file nobody vouches for is a failure."""
    (bundle / "model" / "extra.bin").write_bytes(b"x")
    report = audit(bundle, load_model=False)
    assert _problems(report, "checksums") == ["model/extra.bin: not listed in SHA256SUMS"]
    assert _problems(report, "provenance") == [
        "model/extra.bin: not a subject of provenance.intoto.json"
    ]
    assert not [
        c.name for c in report.checks if c.name not in ("checksums", "provenance") and not c.ok
    ]


# -- malformed lineage.json and manifests ------------------------------------------------------


def _lineage(bundle: Path, data: bytes, complete: bool = False) -> list[str]:
    """The problems with the bundle once lineage.json holds `data` (and SHA256SUMS agrees);
    `complete`: lineage.json is still readable, so every check runs."""
    (bundle / "lineage.json").write_bytes(data)
    _relist(bundle, "lineage.json")
    report = audit(bundle, load_model=False)
    assert not report.ok
    checks = ["checksums", "lineage"] + (["copies", "evals"] if complete else [])
    assert [c.name for c in report.checks] == [*checks, "provenance"]
    # The SLSA statement still holds lineage.json's sha256 as released.
    assert "lineage.json: differs from its subject in provenance.intoto.json" in _problems(
        report, "provenance"
    )
    return [p for c in report.checks if c.name != "provenance" for p in c.problems]


def test_a_lineage_json_nested_100000_deep_is_a_verdict(bundle: Path) -> None:
    problems = _lineage(bundle, b"[" * 100_000 + b"]" * 100_000)
    assert problems == ["lineage.json: nested too deeply to read as JSON"]


def test_a_lineage_json_that_is_a_list_is_named(bundle: Path) -> None:
    problems = _lineage(bundle, b"[1, 2]")
    assert problems == ["lineage.json: the top level: expected an object, got a list"]


def test_a_string_where_lineage_json_wants_a_list_is_named(bundle: Path) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    lineage["nodes"] = "all of them"
    problems = _lineage(bundle, json.dumps(lineage).encode())
    assert problems == ['lineage.json: nodes: expected a list, got "all of them"']


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("digest", 5, "nodes[1].digest: expected a string, got 5"),
        ("copies", [], "nodes[1].copies: expected an object, got a list"),
        ("copies", {"a": None}, "nodes[1].copies.a: expected a string, got null"),
    ],
)
def test_a_field_of_the_wrong_type_in_lineage_json_is_named(
    bundle: Path, field: str, value: object, expected: str
) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    lineage["nodes"][1][field] = value
    assert _lineage(bundle, json.dumps(lineage).encode()) == [f"lineage.json: {expected}"]


def test_a_lineage_json_without_release_is_named(bundle: Path) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    del lineage["release"]
    assert _lineage(bundle, json.dumps(lineage).encode()) == ["lineage.json: release: missing"]


def test_a_lineage_json_that_is_not_json_is_named(bundle: Path) -> None:
    problems = _lineage(bundle, b"{nodes: []}")
    assert len(problems) == 1
    assert problems[0].startswith("lineage.json: not valid JSON (Expecting property name")


def test_a_lineage_json_that_is_not_utf8_is_named(bundle: Path) -> None:
    problems = _lineage(bundle, b'{"nodes": "\xff"}')
    assert problems == ["lineage.json: not UTF-8 (byte 0xff at offset 11)"]


def test_a_huge_lineage_json_is_not_read_whole(bundle: Path) -> None:
    with (bundle / "lineage.json").open("wb") as f:
        f.truncate(40 << 20)  # sparse: 40 MiB of zeros costs no disk
    _relist(bundle, "lineage.json")
    problems = _problems(audit(bundle, load_model=False), "lineage")
    assert problems == ["lineage.json: larger than 32 MiB; not read"]


def test_a_manifest_that_is_a_list_is_named(bundle: Path) -> None:
    """A forged manifest hashes to the digest lineage.json gives it, yet has the wrong shape."""
    lineage = json.loads((bundle / "lineage.json").read_text())
    data = b'["a", "list"]'
    digest = _sha256(data)
    old = lineage["nodes"][0]
    rel = f"lineage/manifests/{digest}.json"
    (bundle / old["manifest"]).unlink()
    (bundle / rel).write_bytes(data)
    lineage["nodes"][0] = {**old, "digest": digest, "manifest": rel}
    (bundle / "lineage.json").write_text(json.dumps(lineage))
    # A forger rewrites SHA256SUMS to match too.
    _write_sums(
        bundle,
        [
            f"{_sha256(p.read_bytes())}  {p.relative_to(bundle).as_posix()}"
            for p in sorted(bundle.rglob("*"))
            if p.is_file() and p.name != "SHA256SUMS"
        ],
    )
    report = audit(bundle, load_model=False)
    assert not report.ok
    assert f"{rel}: the top level: expected an object, got a list" in _problems(report, "lineage")


# A forger who rewrites SHA256SUMS still meets the SLSA statement's record of the file.
INDEX_CHANGED = "checkpoints/index.json: differs from its subject in provenance.intoto.json"


def test_a_malformed_checkpoint_index_is_named(bundle: Path) -> None:
    (bundle / "checkpoints/index.json").write_text('[{"path_in_artifact": 3, "files": []}]')
    _relist(bundle, "checkpoints/index.json")
    report = audit(bundle, load_model=False)
    assert _problems(report, "copies") == [
        "checkpoints/index.json: [0].path_in_artifact: expected a string, got 3"
    ]
    assert _problems(report, "provenance") == [INDEX_CHANGED]


def test_a_checkpoint_index_pointing_outside_is_not_followed(bundle: Path) -> None:
    index = json.loads((bundle / "checkpoints/index.json").read_text())
    index[0]["bundle_path"] = "../../../etc"
    (bundle / "checkpoints/index.json").write_text(json.dumps(index))
    _relist(bundle, "checkpoints/index.json")
    report = audit(bundle, load_model=False)
    assert _problems(report, "provenance") == [INDEX_CHANGED]
    problems = _problems(report, "copies")
    assert len(problems) == 1
    assert problems[0].startswith("checkpoints/index.json: the checkpoint at step 1: ../../../etc/")
    assert problems[0].endswith("climbs out through '..', which leaves the bundle; not read")


def test_an_eval_report_that_is_a_list_is_named(bundle: Path) -> None:
    (rel,) = [p.relative_to(bundle).as_posix() for p in bundle.glob("evals/*/report.json")]
    (bundle / rel).write_text("[]")
    report = audit(bundle, load_model=False)
    assert f"{rel}: the top level: expected an object, got a list" in _problems(report, "evals")


# -- the CLI -----------------------------------------------------------------------------------


def test_the_cli_gives_a_verdict_on_a_hostile_bundle(bundle: Path) -> None:
    (bundle / "lineage.json").write_bytes(b'{"a": ' * 100_000)
    (bundle / "model" / "config.json").unlink()
    (bundle / "model" / "config.json").symlink_to("/etc/passwd")
    result = CliRunner().invoke(app, ["audit", str(bundle)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # the verdict's exit, not a crash
    assert "Traceback" not in result.output
    assert "FAIL" in result.output
    assert "lineage.json: nested too deeply to read as JSON" in result.output
    as_json = CliRunner().invoke(app, ["audit", str(bundle), "--json"])
    assert as_json.exit_code == 1
    verdict = json.loads(as_json.stdout)
    assert verdict["ok"] is False
    checks = {c["name"]: c for c in verdict["checks"]}
    assert not checks["checksums"]["ok"] and not checks["lineage"]["ok"]
    assert checks["model"]["problems"][0].startswith("model/: not loaded")


# -- a release artifact in the store -----------------------------------------------------------


def _sealed_release(bundle: Path, tmp_path: Path) -> Path:
    """The bundle sealed as the engine seals a release: the one directory inside the artifact."""
    store = ArtifactStore(tmp_path / "relstore")
    return Path(store.seal(bundle.parent, "release/x/release", {"type": "release"}).uri)


def test_a_store_artifact_whose_bundle_is_a_link_fails(bundle: Path, tmp_path: Path) -> None:
    artifact = _sealed_release(bundle, tmp_path)
    inner = artifact / bundle.name
    assert audit(artifact, load_model=False).ok  # the seal and the bundle both verify
    elsewhere = tmp_path / "elsewhere"
    inner.rename(elsewhere)
    inner.symlink_to(elsewhere)  # the bundle is no longer the artifact's own
    report = audit(artifact, load_model=False)
    assert [c.name for c in report.checks] == ["artifact"]
    problems = _problems(report)
    assert f"bundle: a symbolic link (to '{elsewhere}'), not a file" in problems[0]
    assert "bundle/SHA256SUMS: not read, because bundle is not a directory" in problems


def test_a_link_in_a_sealed_bundle_fails_the_seal_too(bundle: Path, tmp_path: Path) -> None:
    artifact = _sealed_release(bundle, tmp_path)
    (artifact / bundle.name / "README.md").unlink()
    (artifact / bundle.name / "README.md").symlink_to("/etc/passwd")
    with opened() as paths:
        report = audit(artifact, load_model=False)
    checks = {c.name: c.problems for c in report.checks}
    assert checks["seal"][0].startswith("bundle/README.md: a symbolic link (to '/etc/passwd')")
    assert checks["checksums"][0].startswith("README.md: a symbolic link (to '/etc/passwd')")
    assert not [p for p in paths if p.endswith("passwd")]


def test_a_node_listed_twice_in_lineage_json_is_named(bundle: Path) -> None:
    lineage = json.loads((bundle / "lineage.json").read_text())
    lineage["nodes"].append({**lineage["nodes"][0], "manifest": "/etc/passwd"})
    n = len(lineage["nodes"]) - 1
    digest = lineage["nodes"][0]["digest"]
    problems = _lineage(bundle, json.dumps(lineage).encode(), complete=True)
    assert problems == [f"lineage.json: nodes[{n}] repeats artifact {digest[:12]}"]
