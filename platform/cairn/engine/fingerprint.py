"""Step fingerprints: the cache key, built only from what changes a step's result.

sha256 over the stage kind, its code version, its config's identity fields, the digests of its
input artifacts and the versions of the packages that change its numbers. Resources, paths, the
step's name and the cluster address are deliberately absent: moving a run to a cluster or giving
it more workers must not re-address its artifacts.
"""

from __future__ import annotations

import hashlib
import json

from cairn.stage import StageConfig, StageSpec, package_version


def fingerprint_payload(
    spec: StageSpec, config: StageConfig, inputs: dict[str, list[str]]
) -> dict[str, object]:
    return {
        "kind": spec.kind,
        "code": spec.code_version(),
        "config": config.identity(),
        "inputs": {slot: list(digests) for slot, digests in sorted(inputs.items())},
        "packages": {p: package_version(p) for p in sorted(spec.result_packages)},
    }


def fingerprint(spec: StageSpec, config: StageConfig, inputs: dict[str, list[str]]) -> str:
    payload = fingerprint_payload(spec, config, inputs)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
