"""Signed releases: `cairn release sign` and the audit's `signature` check, in the OpenSSF
model-signing format (the `model-signing` package, key-based: an elliptic-curve key pair).

The signature is `release.sig` inside the bundle: a Sigstore bundle whose DSSE envelope signs an
in-toto statement listing every other file of the bundle with its sha256 (SHA256SUMS and the SLSA
statement `provenance.intoto.json` among them). It is outside SHA256SUMS, because it signs
SHA256SUMS, and the audit allows exactly that one unlisted file. Since the file lies inside the
bundle and model-signing leaves the signature out of what it hashes, the bundle as shipped
verifies on its own, without Cairn:

    model_signing verify key --signature BUNDLE/release.sig --public_key PUB.pem BUNDLE

Signing reads the private key where it lies (model-signing loads it from the path): it is never
copied, logged or written into the bundle, and a key inside the bundle is refused. A bundle is
signed only once `cairn audit` passes on it, and never inside Cairn's store, where it is a sealed
artifact whose files must not change.

The audit reads `release.sig` like every other bundle file (`confined.py`): the files it signs
are checked against the bundle's (each one that differs, is missing or is not signed is named),
and with a public key model-signing's own verifier runs in-process on the bundle, on a private
copy of the signature bytes that were read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from cairn.artifacts.confined import Folder, Refused, parse_json, path_problem, shown
from cairn.errors import CairnError
from cairn.results import Check
from cairn.stage.files import MANIFEST

SIGNATURE = "release.sig"
KEYGEN = (
    "openssl ecparam -name prime256v1 -genkey -noout -out release-key.pem && "
    "openssl ec -in release-key.pem -pubout -out release-key.pub.pem"
)
_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # those model-signing accepts
_ENVELOPE = {"dsseEnvelope": {"payload": str}}
_PAYLOAD = {
    "predicate": {
        "serialization": {"method": str, "hash_type": str},
        "resources": [{"name": str, "digest": str}],
    }
}


def key_hint(public_pem: bytes) -> str:
    """The sha256 of a public key's PEM: the hint model-signing records in the signature."""
    return hashlib.sha256(public_pem).hexdigest()


def load_private_key(path: Path, password: str | None) -> bytes:
    """Check that `path` holds an EC private key model-signing can sign with; returns its public
    key's PEM. Raises CairnError saying how to make one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        data = path.read_bytes()
    except OSError as e:
        raise CairnError(f"{path}: cannot read the private key ({e.strerror})") from e
    try:
        key = serialization.load_pem_private_key(
            data, password.encode() if password is not None else None
        )
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise CairnError(
            f"{path}: {e}; fix: set CAIRN_KEY_PASSWORD to the key's password (or leave it unset "
            "for an unencrypted key)"
        ) from None
    except ValueError:
        # cryptography's message can echo key material: say what is wrong, not what it read.
        raise CairnError(
            f"{path}: not a PEM private key (or a wrong password); fix: make a key pair with "
            f"`{KEYGEN}`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise CairnError(
            f"{path}: model signing needs an elliptic-curve key on P-256, P-384 or P-521, not "
            f"{type(key).__name__.removeprefix('_')}; fix: make one with `{KEYGEN}`"
        )
    pem: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def load_public_key(path: Path) -> bytes:
    """Check that `path` holds an EC public key; returns its PEM. Raises CairnError."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise CairnError(f"{path}: cannot read the public key ({e.strerror})") from e
    except ValueError:
        raise CairnError(
            f"{path}: not a PEM public key; fix: derive it from the signing key with "
            "`openssl ec -in release-key.pem -pubout -out release-key.pub.pem`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
        raise CairnError(
            f"{path}: not an elliptic-curve public key on P-256, P-384 or P-521, which model "
            "signing uses"
        )
    pem: bytes = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


def refuse_unsignable(root: Path, key: Path) -> None:
    """Raise CairnError when `root` is not a bundle that may be signed in place with `key`."""
    if not (root / "SHA256SUMS").is_file():
        inner = [p.parent.name for p in root.glob("*/SHA256SUMS")]
        hint = f" (its bundle is {root / inner[0]})" if len(inner) == 1 else ""
        raise CairnError(
            f"{root}: no SHA256SUMS — not a release bundle{hint}; give the bundle's directory"
        )
    if (root.parent / MANIFEST).is_file():
        raise CairnError(
            f"{root} lies in a sealed artifact of Cairn's store ({root.parent / MANIFEST}), whose "
            f"files must not change; fix: copy the bundle out and sign the copy: "
            f"`cp -r {root} DEST && cairn release sign DEST --key {key}`"
        )
    if key.resolve().is_relative_to(root.resolve()):
        raise CairnError(
            f"{key}: the private key lies inside the bundle, which would publish it; fix: move "
            "it out of the bundle (and make a new key pair if this bundle was ever shared)"
        )


def sign(root: Path, key: Path, password: str | None) -> int:
    """Write `root/release.sig` over every other file of the bundle (model-signing, key-based);
    returns how many files it signs."""
    import model_signing

    hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE])
    # model-signing 1.1.1 types the password as str but hands it to cryptography, which takes
    # only bytes.
    secret = password.encode() if password is not None else None
    try:
        model_signing.signing.Config().use_elliptic_key_signer(
            private_key=key,
            password=secret,  # type: ignore[arg-type]
        ).set_hashing_config(hashing).sign(root, root / SIGNATURE)
    except Exception as e:  # model-signing's own failure (e.g. unreadable file): say where
        raise CairnError(
            f"{root}: model-signing could not sign the bundle ({type(e).__name__}: {e})"
        ) from e
    return len(signed_files((root / SIGNATURE).read_bytes())[0])


def signed_files(data: bytes) -> tuple[dict[str, str], dict[str, Any]]:
    """The files a signature's payload lists ({path: digest}) and its serialization, read
    without verifying who signed them. Raises Refused naming what is malformed."""
    envelope = parse_json(SIGNATURE, data, _ENVELOPE)
    try:
        payload = base64.b64decode(envelope["dsseEnvelope"]["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{SIGNATURE}: dsseEnvelope.payload is not base64") from None
    statement = parse_json(f"{SIGNATURE} (its signed statement)", payload, _PAYLOAD)
    predicate = statement["predicate"]
    files = {r["name"]: r["digest"].lower() for r in predicate["resources"]}
    return files, predicate["serialization"]


def check(bundle: Folder, public_key: Path | None) -> Check | None:
    """The `signature` check: None when the bundle is unsigned and no key was given."""
    present = SIGNATURE in bundle.files or SIGNATURE in bundle.odd
    if not present and public_key is None:
        return None
    check = Check("signature")
    if not present:
        check.problems.append(
            f"{SIGNATURE}: missing — the release is not signed; sign it with "
            "`cairn release sign BUNDLE --key PRIVATE.pem`"
        )
        return check
    try:
        data = bundle.read(SIGNATURE)
        files, serialization = signed_files(data)
    except Refused as e:
        check.problems.append(str(e))
        return check
    compared = _against_files(bundle, files, serialization, check)
    if public_key is None:
        check.detail = (
            f"{len(files)} signed files{' match' if compared else ''}; who signed them is not "
            "checked (give --verify-signature --public-key PUB.pem)"
        )
        return check
    if bundle.odd:
        check.problems.append(
            f"{SIGNATURE}: not verified with model-signing, which would follow links and open "
            "special files: the bundle holds some (see checksums)"
        )
        return check
    _verify(bundle.root, data, public_key, check)
    if check.ok:
        hint = key_hint(load_public_key(public_key))
        check.detail = (
            f"{len(files)} files signed; model-signing verifies them with {public_key.name} "
            f"(key {hint[:16]}…)"
        )
    return check


def _against_files(
    bundle: Folder, files: dict[str, str], serialization: dict[str, Any], check: Check
) -> bool:
    """Each signed file against the bundle's, naming each that differs, is missing or is not
    signed; False when the signature hashes in a way this cannot compare (model-signing then
    judges alone)."""
    if serialization["method"] != "files" or serialization["hash_type"] != "sha256":
        return False
    for rel, digest in sorted(files.items()):
        if problem := path_problem(rel):
            check.problems.append(f"{SIGNATURE}: signs {shown(rel)}, which {problem}")
        elif rel in bundle.odd:
            continue  # named by the checksums check
        elif problem := bundle.not_a_file(rel, SIGNATURE, f"missing (signed in {SIGNATURE})"):
            check.problems.append(problem)
        else:
            try:
                if bundle.sha256(rel) != digest:
                    check.problems.append(f"{rel}: differs from what {SIGNATURE} signed")
            except Refused as e:
                check.problems.append(str(e))
    for rel in sorted(bundle.files.keys() - files.keys() - {SIGNATURE}):
        check.problems.append(f"{shown(rel)}: not signed by {SIGNATURE}")
    return True


def _verify(root: Path, data: bytes, public_key: Path, check: Check) -> None:
    """model-signing's verifier on the bundle, with the signature bytes the audit read."""
    import model_signing

    with tempfile.TemporaryDirectory(prefix="cairn-signature-") as tmp:
        copy = Path(tmp) / SIGNATURE
        copy.write_bytes(data)
        hashing = model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE])
        try:
            model_signing.verifying.Config().use_elliptic_key_verifier(
                public_key=public_key
            ).set_hashing_config(hashing).verify(root, copy)
        except Exception as e:  # the verifier's verdict, whatever it raises: reported
            message = str(e) or type(e).__name__
            if message.startswith("Signature mismatch") and not check.ok:
                # A valid signature over other files: those are named above.
                check.problems.append(
                    f"{SIGNATURE}: model-signing finds files that differ from the signature"
                )
            else:
                check.problems.append(
                    f"{SIGNATURE}: does not verify with {public_key} "
                    f"({type(e).__name__}: {message[:300]})"
                )
