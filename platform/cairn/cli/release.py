"""`cairn release ...`: what a publisher does with a release bundle once a run made it (sign it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import cairn
from cairn.cli.app import JsonOpt, app, emit, fail, out
from cairn.errors import CairnError

release_app = typer.Typer(
    help="Publish a release bundle: sign it (OpenSSF model signing).", no_args_is_help=True
)
app.add_typer(release_app, name="release")


@release_app.command("sign")
def sign(
    bundle: Annotated[
        Path, typer.Argument(help="the release bundle directory (a copy out of the store)")
    ],
    key: Annotated[
        Path,
        typer.Option("--key", help="EC private key (PEM, P-256/384/521); read, never copied"),
    ],
    password: Annotated[
        str | None,
        typer.Option(
            envvar="CAIRN_KEY_PASSWORD",
            show_default=False,
            help="the key's password, if it is encrypted (prefer the CAIRN_KEY_PASSWORD "
            "variable: a command line is visible to other users of the machine)",
        ),
    ] = None,
    no_load: Annotated[
        bool, typer.Option("--no-load", help="audit without loading the model (faster)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign a release bundle with a private key: writes BUNDLE/release.sig.

    The signature is in the OpenSSF model-signing format (a Sigstore bundle, key-based, no
    network): it signs every file of the bundle, SHA256SUMS and the SLSA provenance statement
    `provenance.intoto.json` among them. The bundle must pass `cairn audit` first, and must not
    lie in Cairn's store (copy it out: the store's artifacts never change).

    Make a key pair (keep `release-key.pem` secret, publish `release-key.pub.pem`):

        openssl ecparam -name prime256v1 -genkey -noout -out release-key.pem
        openssl ec -in release-key.pem -pubout -out release-key.pub.pem

    Sign, then verify with Cairn or with model-signing alone:

        cp -r .cairn/store/release/.../quickstart ./quickstart
        cairn release sign ./quickstart --key release-key.pem
        cairn audit ./quickstart --verify-signature --public-key release-key.pub.pem
        model_signing verify key --signature ./quickstart/release.sig --public_key release-key.pub.pem ./quickstart
    """
    try:
        signed = cairn.sign_release(bundle, key, password=password, load_model=not no_load)
    except CairnError as e:
        fail(e, as_json)
    if as_json:
        emit(signed.to_dict())
        return
    out.print(f"signed {signed.files} files of {signed.path}", soft_wrap=True, highlight=False)
    out.print(f"  signature: {signed.signature}", soft_wrap=True, highlight=False)
    out.print(f"  key (sha256 of its public PEM): {signed.key_sha256}", soft_wrap=True)
    out.print(
        f"  verify: cairn audit {signed.path} --verify-signature --public-key PUB.pem",
        soft_wrap=True,
        highlight=False,
    )
