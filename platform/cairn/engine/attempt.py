"""What runs on the worker for one step attempt: call the stage, then seal its outputs.

This is the only code that executes inside a Ray task. It touches the artifact store (the worker
must write outputs where every node can read them) but never the database or MLflow: it returns
the sealed artifacts' descriptions, and the engine records them. If anything fails, the staging
directory is removed, so nothing half-written is left behind.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn import stages
from cairn.artifacts.store import ArtifactStore
from cairn.engine.context import StepContext
from cairn.engine.fingerprint import fingerprint_payload
from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact, Resources, StageSpec
from cairn.stage.files import manifest_digest
from cairn.stage.usage import Meter, node_id


@dataclass
class StepPayload:
    """Everything a worker needs for one attempt; plain data so it pickles across nodes."""

    run_id: str
    step: str
    step_run_id: int
    kind: str
    config: dict[str, Any]
    inputs: dict[str, list[dict[str, Any]]]  # slot -> [{uri, digest, type, metadata, name}]
    resources: dict[str, Any]
    fingerprint: str
    store_root: str
    checkpoint_dir: str
    # The driver's download folder for a remote store's artifacts (absolute: the step and its
    # training workers run in other working directories).
    cache_dir: str = ""
    module: str | None = None  # where the kind's spec lives, for kinds registered at run time
    # The run's workflow: name, path, digest, git (commit of its repository) and text. Recorded
    # in every manifest (all but the text) and given to stages that describe a run (release).
    workflow: dict[str, Any] = field(default_factory=dict)
    # What each ancestor artifact's step cost, for kinds that publish it (StageSpec.reads_compute).
    compute: dict[str, Any] = field(default_factory=dict)
    # {source digest: licence} the workflow states upstream, for kinds that publish them.
    licenses: dict[str, str] = field(default_factory=dict)


def execute_step(payload: StepPayload, reporter: Any) -> dict[str, Any]:
    spec = stages.get(payload.kind, payload.module)
    config = spec.config_model.model_validate(payload.config)
    store = ArtifactStore(
        payload.store_root, cache_dir=Path(payload.cache_dir) if payload.cache_dir else None
    )
    inputs: dict[str, Any] = {}
    for slot, items in payload.inputs.items():
        arts = [
            InputArtifact(
                path=store.local_path(i["uri"], i["digest"]),
                type=ArtifactType(i["type"]),
                digest=i["digest"],
                # A licence the workflow states on an external input reaches the stage too
                # (curate's data card states it).
                metadata=(i.get("metadata") or {})
                | ({"license": i["license"]} if i.get("license") else {}),
                name=i.get("name", ""),
                uri=i["uri"],
            )
            for i in items
        ]
        inputs[slot] = arts if spec.inputs[slot].many else arts[0]

    staging = store.staging_dir(f"{payload.run_id}-{payload.step}")
    ckpt = Path(payload.checkpoint_dir)
    ckpt.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(
        run_id=payload.run_id,
        step=payload.step,
        resources=Resources.model_validate(payload.resources),
        outputs_root=staging / "outputs",
        checkpoint_dir=ckpt,
        scratch_dir=staging / "scratch",
        reporter=reporter,
        workflow=payload.workflow,
        compute=payload.compute,
        licenses=payload.licenses,
    )
    ctx.scratch_dir.mkdir(parents=True)
    ctx.outputs_root.mkdir(parents=True)
    meter = _driver_meter(spec.launcher, ctx.resources)
    try:
        metadata = spec.run(config, inputs, ctx) or {}
        ctx.flush()
        sealed: dict[str, dict[str, Any]] = {}
        # Each parent's URI is kept beside its digest so the ancestry can be walked from
        # manifests alone (the release stage and `cairn audit` need no database).
        # A sealed parent's manifest digest is recorded too: its provenance, which its content
        # digest does not cover, cannot then change unseen (`ancestry.walk` checks it).
        parents = [
            {
                "slot": slot,
                "digest": i["digest"],
                "type": i["type"],
                "uri": i["uri"],
                "name": i.get("name", ""),
                # The licence the workflow stated for an external input when this was made (a
                # release states the one its own run's workflow states, `StageSpec.reads_licenses`).
                **({"license": i["license"]} if i.get("license") else {}),
                **({} if i["type"] == "raw" else _manifest_of(store, i["uri"])),
            }
            for slot, items in payload.inputs.items()
            for i in items
        ]
        provenance = _provenance(spec, config, payload)
        made = spec.outputs_for(config)
        provenance_digests: dict[str, str] = {}  # each sealed output's manifest digest
        # An output made from sibling outputs (a merged model, from its adapter) is sealed
        # after them, with them among its parents.
        for name, type_ in sorted(made.items(), key=lambda x: x[0] in spec.output_parents):
            out = ctx.outputs_root / name
            if not out.is_dir() or not any(out.iterdir()):
                raise StageError(
                    f"stage '{payload.kind}' finished without writing its output '{name}' "
                    f"(expected files under ctx.output_path('{name}')): this is a bug in the stage"
                )
            art = store.seal(
                out,
                _address(spec, payload, name),
                {
                    "type": type_.value,
                    "kind": payload.kind,
                    "step": payload.step,
                    "output": name,
                    "fingerprint": payload.fingerprint,
                    "producer": {"run_id": payload.run_id, "step_run_id": payload.step_run_id},
                    "parents": parents + _siblings(spec, payload, name, sealed, provenance_digests),
                    "metadata": metadata.get(name, {}),
                    **provenance,
                },
            )
            sealed[name] = {
                "digest": art.digest,
                "uri": art.uri,
                "type": art.type,
                "manifest": art.manifest,
            }
            provenance_digests[name] = art.manifest_digest
        return {
            "artifacts": sealed,
            "node": node_id(),
            "worker": f"{socket.gethostname()}:{os.getpid()}",
        }
    finally:
        ctx.usage(meter.stop())
        ctx.flush()
        store.discard(staging)


def _siblings(
    spec: StageSpec,
    payload: StepPayload,
    name: str,
    sealed: dict[str, dict[str, Any]],
    manifests: dict[str, str],
) -> list[dict[str, Any]]:
    """The outputs of this step that output `name` is made from (`StageSpec.output_parents`),
    as parents: slot is the sibling's output name, name its `step.output` reference."""
    return [
        {
            "slot": sibling,
            "digest": sealed[sibling]["digest"],
            "type": sealed[sibling]["type"],
            "uri": sealed[sibling]["uri"],
            "name": f"{payload.step}.{sibling}",
            "manifest": manifests[sibling],
        }
        for sibling in spec.output_parents.get(name, ())
        if sibling in sealed  # an optional sibling this step did not make
    ]


def _manifest_of(store: ArtifactStore, uri: str) -> dict[str, str]:
    """{"manifest": sha256 of its manifest.json} for a sealed input; {} for a directory no step
    made (a model given as a path)."""
    try:
        return {"manifest": manifest_digest(store.read_manifest(uri))}
    except FileNotFoundError:
        return {}


def _address(spec: StageSpec, payload: StepPayload, name: str) -> str:
    """Where output `name` is sealed in the store: one folder per fingerprint, since the same
    fingerprint makes the same result. A kind that judges its cached results (`reusable`) may
    hold several under one fingerprint (a stopped server's record, a kept server's endpoint),
    so each run's has a folder of its own (`FINGERPRINT-RUN`, keeping the store's four levels,
    `{kind}/{step}/{folder}/{output}`): sealing one never replaces another still in use."""
    folder = payload.fingerprint
    if spec.reusable is not None:
        folder += f"-{payload.run_id}"
    return f"{payload.kind}/{payload.step}/{folder}/{name}"


def _driver_meter(launcher: str, res: Resources) -> Meter:
    """The step process's own meter; what it holds depends on the launcher (see accounting)."""
    if launcher == "trainer":  # its Ray Train workers meter themselves and hold the resources
        return Meter("driver", cpus=0, gpus=0)
    return Meter(
        "driver",
        cpus=res.cpus_per_worker * res.num_workers,
        gpus=res.gpus_per_worker * res.num_workers,
    )


def _provenance(spec: StageSpec, config: Any, payload: StepPayload) -> dict[str, Any]:
    """What made the artifact, in its manifest: the full config, everything its fingerprint is
    computed from (stage code hash, identity config, input digests, result-changing package
    versions) and the workflow it ran in. A release carries these manifests, so anyone can see
    how each artifact was made without Cairn's database."""
    inputs = {slot: [i["digest"] for i in items] for slot, items in payload.inputs.items()}
    return {
        "config": payload.config,
        "fingerprint_inputs": fingerprint_payload(spec, config, inputs, payload.licenses),
        "workflow": {k: v for k, v in payload.workflow.items() if k != "text"},
    }
