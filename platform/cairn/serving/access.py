"""Who may call a server: its API key, and the rule that a server other machines can reach has one.

A server bound to a loopback address (127.0.0.0/8, ::1, `localhost`) answers this machine only.
Bound anywhere else (0.0.0.0, ::, a LAN address, a host name) it answers whoever reaches the
port, so Cairn refuses to start it without an API key unless told it is on a trusted network
(`insecure`). Clients send the key as OpenAI's do: `Authorization: Bearer KEY` (the `openai`
client's `api_key`); requests under /v1 without it get 401, `/health` stays open for probes.

The key reaches the server in its environment (`VLLM_API_KEY` for vLLM, `CAIRN_SERVE_API_KEY`
for the transformers engine), never on its command line, which `ps` shows to every user and the
server's log records. Nothing Cairn writes (logs, the endpoint artifact, MLflow, a release)
holds the key; the endpoint says only whether one is required.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path

from cairn.serving.engines import ServingError
from cairn.settings import read_secret_file

GUARDED_PREFIX = "/v1"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server to this machine. A host name other than
    `localhost` counts as exposed: what it resolves to is not ours to trust."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_loopback


def check_exposure(host: str, api_key: str | None, insecure: bool, fix: str) -> None:
    """Refuse to serve on a non-loopback `host` without an API key, unless `insecure`; `fix`
    says how the caller gives a key or the flag (it differs between the CLI and a step)."""
    if api_key or insecure or is_loopback(host):
        return
    shown = host or "all interfaces"
    raise ServingError(
        f"refusing to serve on {shown} without an API key: it is not a loopback address, so "
        f"anyone who can reach this machine could use the model; fix: {fix}"
    )


def read_key_file(path: str | Path) -> str:
    """The API key in the file at `path` (less a final newline)."""
    try:
        return read_secret_file(Path(path).expanduser())
    except ValueError as e:
        raise ServingError(
            f"API key file {path}: {e}; fix: point it at a file that holds the key alone"
        ) from None


def key_digest(api_key: str) -> bytes:
    return hashlib.sha256(api_key.encode("utf-8")).digest()


def authorized(authorization: str | None, digest: bytes) -> bool:
    """Whether an `Authorization` header carries the key whose sha256 is `digest` (compared in
    constant time, on digests so that the key's length does not show either)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(key_digest(token.strip()), digest)
