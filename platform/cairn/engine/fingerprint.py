"""Step fingerprints: the cache key, built only from what changes a step's result.

sha256 over the stage kind, its code version, its config's identity fields, the digests of its
input artifacts and the versions of the packages that change its numbers. Resources, paths, the
step's name and the cluster address are deliberately absent: moving a run to a cluster or giving
it more workers must not re-address its artifacts.

The licence a workflow states for an external input is not part of that input's digest (it says
something about the bytes, it is not them), but it is sealed into the step's output manifest and
read from there by the release's cards: so it is part of the fingerprint of the step that reads
the input, or adding a licence to a workflow would reuse an output that does not state it. It is
added only where a licence is stated, so every other fingerprint stays what it was.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cairn.stage import StageConfig, StageSpec, package_version


def input_licenses(inputs: dict[str, list[dict[str, Any]]]) -> dict[str, list[str | None]]:
    """{slot: [licence or None per input]} of the slots where some input states a licence."""
    return {
        slot: [i.get("license") for i in items]
        for slot, items in sorted(inputs.items())
        if any(i.get("license") for i in items)
    }


def fingerprint_payload(
    spec: StageSpec,
    config: StageConfig,
    inputs: dict[str, list[str]],
    licenses: dict[str, list[str | None]] | None = None,
) -> dict[str, object]:
    payload: dict[str, object] = {
        "kind": spec.kind,
        "code": spec.code_version(),
        "config": config.identity(),
        "inputs": {slot: list(digests) for slot, digests in sorted(inputs.items())},
        "packages": {p: package_version(p) for p in sorted(spec.result_packages)},
    }
    if licenses:
        payload["input_licenses"] = licenses
    return payload


def fingerprint(
    spec: StageSpec,
    config: StageConfig,
    inputs: dict[str, list[str]],
    licenses: dict[str, list[str | None]] | None = None,
) -> str:
    payload = fingerprint_payload(spec, config, inputs, licenses)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
