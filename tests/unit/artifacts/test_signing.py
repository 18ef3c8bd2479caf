"""Signed releases and their SLSA provenance, on the small bundle of conftest.py: `sign_release`
writes a model-signing signature that model-signing's own verifier accepts, and the audit names
each file that was changed after signing — a model file, the SLSA statement, the signature —
and refuses what cannot be signed. Keys are generated per test session with `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from pathlib import Path

import model_signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from cairn import CairnError, audit, sign_release
from cairn.artifacts.signing import SIGNATURE
from cairn.cli import app
from cairn.results import AuditReport
from cairn.stage.provenance import BUILD_TYPE, PREDICATE_TYPE, STATEMENT

MODEL_FILE = "model/model.safetensors"


def _write_key(folder: Path, name: str, password: bytes | None = None) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _write_key(tmp_path_factory.mktemp("keys"), "release-key")


@pytest.fixture
def signed(bundle: Path, keys: tuple[Path, Path]) -> Path:
    sign_release(bundle, keys[0], load_model=False)
    return bundle


def _problems(report: AuditReport, check: str) -> list[str]:
    return [p for c in report.checks if c.name == check for p in c.problems]


def _model_signing_verifies(bundle: Path, public: Path) -> None:
    """model-signing's own verifier, as a user of it alone would call it."""
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
        bundle, bundle / SIGNATURE
    )


def _relist(bundle: Path, rel: str) -> None:
    """Give `rel` its new sha256 in SHA256SUMS, as a forger would."""
    digest = hashlib.sha256((bundle / rel).read_bytes()).hexdigest()
    lines = (bundle / "SHA256SUMS").read_text().splitlines()
    (bundle / "SHA256SUMS").write_text(
        "".join(
            f"{digest}  {rel}\n" if line.endswith(f"  {rel}") else f"{line}\n" for line in lines
        )
    )


# -- the statement every release carries --------------------------------------------------------


def test_the_statement_names_every_file_the_sources_and_the_workflow(clean: Path) -> None:
    statement = json.loads((clean / STATEMENT).read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == PREDICATE_TYPE
    sums = dict(
        reversed(line.split("  ", 1)) for line in (clean / "SHA256SUMS").read_text().splitlines()
    )
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    assert subjects == {rel: sha for rel, sha in sums.items() if rel != STATEMENT}
    build = statement["predicate"]["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    lineage = json.loads((clean / "lineage.json").read_text())
    (raw,) = [n for n in lineage["nodes"] if n["type"] == "raw"]
    assert [(d["uri"], d["digest"]) for d in build["resolvedDependencies"]] == [
        (raw["uri"], {"sha256": raw["digest"]})
    ]
    workflow = build["externalParameters"]["workflow"]
    text = (clean / "config/workflow.yaml").read_bytes()
    assert workflow["content"].encode() == text
    assert workflow["digest"]["sha256"] == hashlib.sha256(text).hexdigest()
    made = {b["digest"]["sha256"] for b in statement["predicate"]["runDetails"]["byproducts"]}
    assert made == {n["digest"] for n in lineage["nodes"] if n["type"] != "raw"}


def test_the_statement_parses_as_in_toto_and_slsa_provenance_v1(clean: Path) -> None:
    """in-toto's own protobuf definitions (in_toto_attestation, which model-signing uses) read
    it strictly: an unknown or misspelt field anywhere is an error."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    data = json.loads((clean / STATEMENT).read_text())
    parsed = json_format.ParseDict(data, statement_pb2.Statement())
    Statement.copy_from_pb(parsed).validate()
    provenance = json_format.ParseDict(data["predicate"], provenance_pb2.Provenance())
    assert provenance.build_definition.build_type == BUILD_TYPE
    assert provenance.run_details.metadata.invocation_id
    assert len(provenance.build_definition.resolved_dependencies) == 1


def test_a_statement_rewritten_with_sha256sums_is_held_against_lineage(bundle: Path) -> None:
    """A forger drops the source and re-lists the statement: the audit re-derives it."""
    statement = json.loads((bundle / STATEMENT).read_text())
    (dropped,) = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    statement["predicate"]["buildDefinition"]["resolvedDependencies"] = []
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    (bundle / STATEMENT).write_text(json.dumps(statement))
    _relist(bundle, STATEMENT)
    report = audit(bundle, load_model=False)
    assert _problems(report, "provenance") == [
        f"{statement['subject'][0]['name']}: differs from its subject in {STATEMENT}",
        f"{STATEMENT}: resolvedDependencies lacks {dropped['uri']} "
        f"({dropped['digest']['sha256'][:12]}), which lineage.json records",
    ]
    assert [c.name for c in report.checks if not c.ok] == ["provenance"]


def test_a_statement_that_is_not_json_is_named(bundle: Path) -> None:
    (bundle / STATEMENT).write_text("{")
    _relist(bundle, STATEMENT)
    (problem,) = _problems(audit(bundle, load_model=False), "provenance")
    assert problem.startswith(f"{STATEMENT}: not valid JSON")


# -- signing and verifying -----------------------------------------------------------------------


def test_a_signed_release_verifies_with_cairn_and_with_model_signing_alone(
    bundle: Path, keys: tuple[Path, Path]
) -> None:
    before = {p.relative_to(bundle) for p in bundle.rglob("*")}
    result = sign_release(bundle, keys[0], load_model=False)
    assert result.signature == str(bundle / SIGNATURE) and result.audit.ok
    # Only the signature is added; the private key is nowhere in it.
    assert {p.relative_to(bundle) for p in bundle.rglob("*")} - before == {Path(SIGNATURE)}
    private = keys[0].read_bytes()
    secret = private.split(b"\n")[1]  # a line of the key's base64 body
    assert secret not in (bundle / SIGNATURE).read_bytes()
    assert result.files == len([p for p in bundle.rglob("*") if p.is_file()]) - 1
    _model_signing_verifies(bundle, keys[1])
    report = audit(bundle, load_model=False, public_key=keys[1])
    assert report.ok, [c.problems for c in report.checks]
    assert [c.name for c in report.checks][-2:] == ["provenance", "signature"]
    assert "model-signing verifies them" in report.checks[-1].detail
    # Without a key the signature's files are still checked, and it says who signed is not.
    unverified = audit(bundle, load_model=False)
    assert unverified.ok and "not checked" in unverified.checks[-1].detail


def test_one_changed_byte_of_a_model_file_fails_both_verifiers(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    data = bytearray((signed / MODEL_FILE).read_bytes())
    data[0] ^= 1
    (signed / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"Hash mismatch for '{MODEL_FILE}'"):
        _model_signing_verifies(signed, keys[1])
    report = audit(signed, load_model=False, public_key=keys[1])
    assert _problems(report, "signature") == [
        f"{MODEL_FILE}: differs from what {SIGNATURE} signed",
        f"{SIGNATURE}: model-signing finds files that differ from the signature",
    ]
    assert f"{MODEL_FILE}: sha256 mismatch (file changed)" in _problems(report, "checksums")


def test_a_statement_changed_after_signing_fails_naming_it(
    signed: Path, keys: tuple[Path, Path]
) -> None:
    """Even with SHA256SUMS rewritten to match, the signature names the statement (and
    SHA256SUMS, which it also signed)."""
    statement = json.loads((signed / STATEMENT).read_text())
    statement["predicate"]["runDetails"]["metadata"]["invocationId"] = "another-run"
    (signed / STATEMENT).write_text(json.dumps(statement, indent=2))
    _relist(signed, STATEMENT)
    with pytest.raises(ValueError, match=rf"Hash mismatch for \W+{re.escape(STATEMENT)}"):
        _model_signing_verifies(signed, keys[1])
    report = audit(signed, load_model=False, public_key=keys[1])
    assert _problems(report, "signature")[:2] == [
        f"SHA256SUMS: differs from what {SIGNATURE} signed",
        f"{STATEMENT}: differs from what {SIGNATURE} signed",
    ]
    assert [c.name for c in report.checks if not c.ok] == ["signature"]


def test_a_forged_signature_fails_naming_it(signed: Path, keys: tuple[Path, Path]) -> None:
    """The signed statement is changed to match a swapped model file: the files now match
    what release.sig lists, but its signature no longer holds."""
    envelope = json.loads((signed / SIGNATURE).read_text())
    payload = json.loads(base64.b64decode(envelope["dsseEnvelope"]["payload"]))
    (signed / MODEL_FILE).write_bytes(b"other weights")
    new = hashlib.sha256(b"other weights").hexdigest()
    for r in payload["predicate"]["resources"]:
        if r["name"] == MODEL_FILE:
            r["digest"] = new
    envelope["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    (signed / SIGNATURE).write_text(json.dumps(envelope))
    report = audit(signed, load_model=False, public_key=keys[1])
    (problem,) = _problems(report, "signature")
    assert problem.startswith(f"{SIGNATURE}: does not verify with {keys[1]}")


def test_another_key_does_not_verify(signed: Path, tmp_path: Path) -> None:
    _, other = _write_key(tmp_path, "other")
    (problem,) = _problems(audit(signed, load_model=False, public_key=other), "signature")
    assert problem.startswith(f"{SIGNATURE}: does not verify with {other}")
    assert "Key mismatch" in problem


def test_verifying_an_unsigned_release_fails(bundle: Path, keys: tuple[Path, Path]) -> None:
    report = audit(bundle, load_model=False, public_key=keys[1])
    assert _problems(report, "signature") == [
        f"{SIGNATURE}: missing — the release is not signed; sign it with "
        "`cairn release sign BUNDLE --key PRIVATE.pem`"
    ]


def test_a_file_added_after_signing_is_named(signed: Path, keys: tuple[Path, Path]) -> None:
    (signed / "model" / "extra.bin").write_bytes(b"x")
    report = audit(signed, load_model=False, public_key=keys[1])
    assert _problems(report, "signature")[0] == f"model/extra.bin: not signed by {SIGNATURE}"


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"not json", f"{SIGNATURE}: not valid JSON"),
        (
            b'{"dsseEnvelope": {"payload": "%%%"}}',
            f"{SIGNATURE}: dsseEnvelope.payload is not base64",
        ),
        (b"[]", f"{SIGNATURE}: the top level: expected an object, got a list"),
    ],
)
def test_a_malformed_signature_is_named(
    signed: Path, keys: tuple[Path, Path], content: bytes, expected: str
) -> None:
    (signed / SIGNATURE).write_bytes(content)
    (problem,) = _problems(audit(signed, load_model=False, public_key=keys[1]), "signature")
    assert problem.startswith(expected)


def test_a_signature_that_is_a_link_is_not_followed(
    signed: Path, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.sig"
    (signed / SIGNATURE).rename(target)
    os.symlink(target, signed / SIGNATURE)
    report = audit(signed, load_model=False, public_key=keys[1])
    (problem,) = _problems(report, "signature")
    assert problem.startswith(f"{SIGNATURE}: a symbolic link")
    assert not report.ok


# -- what is refused -----------------------------------------------------------------------------


def test_a_bundle_that_fails_the_audit_is_not_signed(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle / "README.md").write_text("changed")
    with pytest.raises(CairnError, match="not signed, because the audit fails .*README.md"):
        sign_release(bundle, keys[0], load_model=False)
    assert not (bundle / SIGNATURE).exists()


def test_a_key_inside_the_bundle_is_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    inside = bundle / "key.pem"
    inside.write_bytes(keys[0].read_bytes())
    with pytest.raises(CairnError, match="the private key lies inside the bundle"):
        sign_release(bundle, inside, load_model=False)


def test_a_bundle_in_the_store_is_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    (bundle.parent / "manifest.json").write_text("{}")
    with pytest.raises(CairnError, match="copy the bundle out and sign the copy"):
        sign_release(bundle, keys[0], load_model=False)


def test_an_rsa_key_is_refused_with_the_command_to_make_one(bundle: Path, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "rsa.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CairnError, match="elliptic-curve key .*`openssl ecparam"):
        sign_release(bundle, path, load_model=False)


def test_an_encrypted_key_needs_its_password(bundle: Path, tmp_path: Path) -> None:
    private, public = _write_key(tmp_path, "locked", password=b"s3cret")
    with pytest.raises(CairnError, match="CAIRN_KEY_PASSWORD"):
        sign_release(bundle, private, load_model=False)
    sign_release(bundle, private, password="s3cret", load_model=False)
    assert audit(bundle, load_model=False, public_key=public).ok


# -- the command line ----------------------------------------------------------------------------


def test_the_cli_signs_and_verifies(bundle: Path, keys: tuple[Path, Path]) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["release", "sign", str(bundle), "--key", str(keys[0]), "--no-load", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["signature"] == str(bundle / SIGNATURE)
    args = ["audit", str(bundle), "--no-load", "--verify-signature", "--public-key", str(keys[1])]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0 and "signature" in ok.output and "PASS" in ok.output
    (bundle / MODEL_FILE).write_bytes(b"swapped")
    bad = runner.invoke(app, args)
    assert bad.exit_code == 1
    assert f"{MODEL_FILE}: differs from what {SIGNATURE} signed" in bad.output


def test_verify_signature_without_a_key_is_an_error(bundle: Path) -> None:
    result = CliRunner().invoke(app, ["audit", str(bundle), "--no-load", "--verify-signature"])
    assert result.exit_code == 1
    assert "--verify-signature and --public-key PUB.pem go together" in result.output
