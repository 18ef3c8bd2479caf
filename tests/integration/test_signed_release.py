"""A signed release, end to end on the trail's real bundle: keys made with the openssl commands
`cairn release sign --help` shows, signed with `python -m cairn release sign`, accepted by
model-signing's own command line (`python -m model_signing verify key`, knowing nothing of Cairn)
and by `cairn audit --verify-signature` (in process); then one flipped byte of the model's weights, and then a
rewritten SLSA statement, each fail both verifiers, which name the file.

The trail's bundle lies in its store and is never changed: each test signs a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.integration.conftest import Trail

CAIRN = [sys.executable, "-m", "cairn"]
MODEL_SIGNING = [sys.executable, "-m", "model_signing"]
WEIGHTS = "model/model.safetensors"
STATEMENT = "provenance.intoto.json"

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _run(args: list[str], trail: Trail) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=trail.env(), capture_output=True, text=True, timeout=300)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """A key pair made as the --help says."""
    private, public = tmp_path / "release-key.pem", tmp_path / "release-key.pub.pem"
    for cmd in (
        ["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(private)],
        ["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)],
    ):
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return private, public


def _model_signing_verify(bundle: Path, public: Path, trail: Trail) -> subprocess.CompletedProcess:
    return _run(
        [
            *MODEL_SIGNING,
            "verify",
            "key",
            "--signature",
            str(bundle / "release.sig"),
            "--public_key",
            str(public),
            str(bundle),
        ],
        trail,
    )


def _audit(bundle: Path, public: Path) -> dict:
    """`cairn audit --verify-signature` (in this process: a subprocess per audit costs seconds)."""
    from cairn.cli import app

    args = ["audit", str(bundle), "--no-load", "--verify-signature", "--public-key", str(public)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.stdout.strip(), result.output[-3000:]
    return json.loads(result.stdout)


def _problems(report: dict, check: str) -> list[str]:
    return [p for c in report["checks"] if c["name"] == check for p in c["problems"]]


def test_a_signed_release_verifies_without_cairn_and_tampering_fails_both(
    trail: Trail, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    private, public = keys
    bundle = tmp_path / "release"
    shutil.copytree(trail.bundle, bundle)

    # Sign (the full audit runs first, loading the model).
    signed = _run([*CAIRN, "release", "sign", str(bundle), "--key", str(private), "--json"], trail)
    assert signed.returncode == 0, signed.stdout + signed.stderr[-3000:]
    result = json.loads(signed.stdout)
    assert result["audit"]["ok"] and result["signature"] == str(bundle / "release.sig")
    assert private.read_text().splitlines()[1] not in signed.stdout + signed.stderr

    # model-signing alone accepts the bundle as shipped, and so does the audit.
    external = _model_signing_verify(bundle, public, trail)
    assert external.returncode == 0 and "Verification succeeded" in external.stdout, external
    report = _audit(bundle, public)
    assert report["ok"], [c for c in report["checks"] if not c["ok"]]
    checks = {c["name"]: c for c in report["checks"]}
    assert {"provenance", "signature"} <= checks.keys()
    statement = json.loads((bundle / STATEMENT).read_text())
    lineage = json.loads((bundle / "lineage.json").read_text())
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {d["digest"]["sha256"] for d in dependencies} == {
        n["digest"] for n in lineage["nodes"] if n["type"] == "raw"
    }
    assert {d["uri"] for d in dependencies} >= {"./poems", "./chat/sft.jsonl", "./chat/dpo.jsonl"}

    # One flipped byte of the weights: both fail, naming the file.
    weights = bundle / WEIGHTS
    original = weights.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    external = _model_signing_verify(bundle, public, trail)
    assert external.returncode == 1 and WEIGHTS in external.stderr, external
    report = _audit(bundle, public)
    assert not report["ok"]
    assert f"{WEIGHTS}: differs from what release.sig signed" in _problems(report, "signature")
    assert f"{WEIGHTS}: differs from its subject in {STATEMENT}" in _problems(report, "provenance")
    weights.write_bytes(original)

    # A rewritten statement: both fail, naming it.
    statement["predicate"]["buildDefinition"]["resolvedDependencies"] = dependencies[1:]
    (bundle / STATEMENT).write_text(json.dumps(statement, indent=2))
    external = _model_signing_verify(bundle, public, trail)
    assert external.returncode == 1 and STATEMENT in external.stderr, external
    report = _audit(bundle, public)
    assert f"{STATEMENT}: differs from what release.sig signed" in _problems(report, "signature")
    assert f"{STATEMENT}: sha256 mismatch (file changed)" in _problems(report, "checksums")
    (dropped,) = [p for p in _problems(report, "provenance") if "resolvedDependencies" in p]
    assert dropped.startswith(f"{STATEMENT}: resolvedDependencies lacks {dependencies[0]['uri']}")
