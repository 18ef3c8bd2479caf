"""Step fingerprints: the cache key, built only from what changes a step's result.

sha256 over the stage kind, its code version, its config's identity fields, the digests of its
input artifacts and the versions of the packages that change its numbers. Resources, paths, the
step's name and the cluster address are deliberately absent: moving a run to a cluster or giving
it more workers must not re-address its artifacts.

The licences a workflow states for its external inputs are statements about the data, not the
data: they are in no fingerprint of a step that computes on it (stating a licence retrains
nothing). A kind that publishes them (`StageSpec.reads_licenses`: the release) has the licences
of every source upstream of it in its fingerprint, so a new statement makes a new release. Only
where some licence is stated: every other fingerprint stays what it was.
"""

from __future__ import annotations

import hashlib
import json

from cairn.stage import StageConfig, StageSpec, package_version


def fingerprint_payload(
    spec: StageSpec,
    config: StageConfig,
    inputs: dict[str, list[str]],
    licenses: dict[str, str] | None = None,
) -> dict[str, object]:
    """What the fingerprint hashes; `licenses` ({source digest: licence}) only for a kind that
    publishes them."""
    payload: dict[str, object] = {
        "kind": spec.kind,
        "code": spec.code_version(),
        "config": config.identity(),
        "inputs": {slot: list(digests) for slot, digests in sorted(inputs.items())},
        "packages": {p: package_version(p) for p in sorted(spec.result_packages)},
    }
    if licenses:
        payload["source_licenses"] = dict(sorted(licenses.items()))
    return payload


def fingerprint(
    spec: StageSpec,
    config: StageConfig,
    inputs: dict[str, list[str]],
    licenses: dict[str, str] | None = None,
) -> str:
    payload = fingerprint_payload(spec, config, inputs, licenses)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
