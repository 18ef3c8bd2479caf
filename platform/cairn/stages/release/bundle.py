"""Assembling a release bundle from a model's ancestry (layout in the package docstring): the
order of the work, and what the bundle says about itself (configs and environment, lineage,
compute, provenance, cards, checksums). What it copies out of the ancestry is `contents.py`."""

from __future__ import annotations

import platform
import sys
from typing import Any

from cairn.errors import StageError
from cairn.stage import (
    Ancestor,
    Ancestry,
    Context,
    InputArtifact,
    Inputs,
    Outputs,
    package_version,
    provenance,
)
from cairn.stage.files import canonical_json, manifest_digest, sha256_file
from cairn.stage.lineage import models_above
from cairn.stage.usage import add
from cairn.stages.release import contents
from cairn.stages.release.cards import data_card, model_card
from cairn.stages.release.config import ReleaseConfig
from cairn.stages.release.contents import SUMS, Bundle
from cairn.stages.release.sources import portable, where

LINEAGE_FORMAT = 1
# Packages whose versions a reader of the release wants whatever the steps declared.
CORE_PACKAGES = ("torch", "transformers", "tokenizers", "ray", "mlflow", "trl", "lm_eval")


def build(config: ReleaseConfig, inputs: Inputs, ctx: Context) -> Outputs:
    model = inputs.get("model")
    if not isinstance(model, InputArtifact):
        raise StageError("release: input 'model' must be exactly one model artifact")
    evals = inputs.get("evals") or []
    evals = evals if isinstance(evals, list) else [evals]
    name = config.name or str(ctx.workflow.get("name") or "model")

    ctx.progress(0, 7, "walking the model's ancestry")
    nodes = ctx.ancestry(model, *evals)
    _check_evals(evals, nodes, model.digest)
    order = nodes.topological()
    steps = _step_dirs(order)
    # The bundle is a directory of its own inside the artifact, so that the store's manifest.json
    # stays outside what is published and SHA256SUMS covers every file of the bundle.
    bundle = Bundle(ctx.output_path("release") / name)
    bundle.root.mkdir()

    ctx.progress(1, 7, "copying the model and its checkpoints")
    released = nodes[model.digest]
    for f in released.manifest["files"]:
        if not f["path"].startswith("checkpoints/"):
            bundle.copy(released, f["path"], f"model/{f['path']}")
    checkpoints = contents.checkpoints(bundle, order, steps, config)
    adapters = contents.adapters(bundle, order, steps)
    if config.include_sources:
        contents.carry_sources(bundle, order, config.include_sources_max_mb)

    ctx.progress(2, 7, "collecting data, training logs and evaluations")
    data = contents.data(bundle, order, steps)
    training = contents.training(bundle, order, steps)
    scores = contents.evals(bundle, [nodes[e.digest] for e in evals], steps)

    ctx.progress(3, 7, "writing configs and lineage")
    environment = _config(bundle, order, steps, ctx, name, config)
    lineage = _lineage(
        bundle, order, steps, name, model.digest, [e.digest for e in evals], adapters
    )
    compute = _compute(bundle, order, ctx.compute)

    ctx.progress(4, 7, "writing the model and data cards")
    facts = {
        "name": name,
        "config": config.model_dump(),
        "model": released.manifest,
        "model_digest": model.digest,
        "checkpoints": checkpoints,
        "adapters": adapters,
        "data": data,
        "training": training,
        "evals": scores,
        "environment": environment,
        "lineage": lineage,
        "compute": compute,
    }
    bundle.write_text("README.md", model_card(facts))
    bundle.write_text("DATA_CARD.md", data_card(facts))

    ctx.progress(5, 7, "provenance")
    # The statement's subjects are every file so far; SHA256SUMS then lists the statement too.
    hashes = bundle.hashes()
    bundle.write_json(
        provenance.STATEMENT,
        provenance.statement(
            subjects=hashes,
            lineage=lineage,
            manifests={n.digest: n.manifest for n in order},
            workflow=ctx.workflow,
            run_id=ctx.run_id,
            step=str(ctx.step),
            cairn_version=package_version("cairn"),
        ),
    )
    hashes[provenance.STATEMENT] = sha256_file(bundle.root / provenance.STATEMENT)

    ctx.progress(6, 7, "checksums")
    sums = bundle.checksums(hashes)
    n_files = sums.count("\n")
    size = sum(p.stat().st_size for p in bundle.root.rglob("*") if p.is_file())
    ctx.log(
        f"release: {name} — {n_files} files, {size / 2**20:.1f} MiB, {len(order)} artifacts in "
        f"lineage, {len(checkpoints)} checkpoints, {len(scores)} eval reports"
    )
    ctx.progress(7, 7, "done")
    return {
        "release": {
            "name": name,
            "bundle": name,  # the bundle's directory inside the artifact
            "model_digest": model.digest,
            "files": n_files,
            "bytes": size,
            "artifacts_in_lineage": len(order),
            "checkpoints": len(checkpoints),
            "metrics": {k: v for s in scores for k, v in s["metrics"].items()},
            "register": config.register_in_mlflow,
        }
    }


def _compute(bundle: Bundle, order: list[Ancestor], known: dict[str, Any]) -> dict[str, Any]:
    """compute.json: what each step in the lineage cost (all its attempts) and the totals per
    stage kind — the figure a reader of an open release asks first after "what data?"."""
    steps: dict[tuple[str, str], dict[str, Any]] = {}
    for node in order:
        entry = known.get(node.digest)
        if entry is None:  # a raw source, or the engine had no record (made by hand)
            continue
        key = (entry["run_id"], entry["step"])
        steps.setdefault(key, {**entry, "artifacts": []})["artifacts"].append(node.digest)
    per_kind: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    for entry in steps.values():
        add(per_kind.setdefault(entry["kind"], {}), entry["usage"])
        add(total, entry["usage"])
    data = {"per_stage": per_kind, "total": total, "steps": list(steps.values())}
    bundle.write_json("compute.json", data)
    return data


def _check_evals(evals: list[InputArtifact], nodes: Ancestry, model: str) -> None:
    """Each report scores the released model or one of its ancestors (a before/after pair: the
    model card compares them), never a model outside its lineage."""
    lineage = models_above(model, lambda d: nodes[d].parents if d in nodes else ())
    for e in evals:
        evaluated = [p["digest"] for p in nodes[e.digest].parents if p["type"] == "model"]
        if len(evaluated) != 1 or evaluated[0] not in lineage:
            got = ", ".join(d[:12] for d in evaluated) or "no model"
            raise StageError(
                f"release: eval report {e.name or e.digest[:12]} evaluated {got}, which is neither "
                f"the released model {model[:12]} nor a model it was trained from; fix: point the "
                "release's `evals` at evaluate steps whose input is the release's `model` (or an "
                "earlier model of its lineage, to compare before and after)"
            )


def _step_dirs(order: list[Ancestor]) -> dict[str, str]:
    """A directory name per artifact: its step's name (plus the output name or a digest
    prefix where two artifacts would share one)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    # A LoRA step's adapter comes before its merged model in the graph: the model, which the
    # training logs and checkpoints are filed under, keeps the step's name.
    for n in sorted(order, key=lambda n: n.type == "adapter"):
        if n.type == "raw":
            continue
        base = str(n.manifest.get("step") or n.type)
        if base in taken:
            base = f"{base}-{n.manifest.get('output') or n.digest[:8]}"
        if base in taken:
            base = f"{base}-{n.digest[:8]}"
        taken.add(base)
        names[n.digest] = base
    return names


def _config(
    bundle: Bundle,
    order: list[Ancestor],
    steps: dict[str, str],
    ctx: Context,
    name: str,
    config: ReleaseConfig,
) -> dict[str, Any]:
    """The workflow file, each step's resolved config and what its fingerprint was made of, and
    the code and package versions."""
    if ctx.workflow.get("text"):
        bundle.write_text("config/workflow.yaml", str(ctx.workflow["text"]))
    resolved = {
        steps[n.digest]: {
            "kind": n.manifest.get("kind"),
            "output": n.manifest.get("output"),
            "artifact": n.digest,
            "config": n.manifest.get("config"),
            "fingerprint": n.manifest.get("fingerprint"),
            "fingerprint_inputs": n.manifest.get("fingerprint_inputs"),
            "workflow": n.manifest.get("workflow"),
            "producer": n.manifest.get("producer"),
        }
        for n in order
        if n.type != "raw"
    }
    resolved[str(ctx.step)] = {"kind": "release", "config": config.model_dump()}
    bundle.write_json("config/steps.json", resolved)
    packages: dict[str, str] = {}
    for n in order:
        packages |= ((n.manifest.get("fingerprint_inputs") or {}).get("packages")) or {}
    environment = {
        "release": name,
        "workflow": {k: v for k, v in ctx.workflow.items() if k != "text"},
        "git_commit": str(ctx.workflow.get("git") or "").removesuffix("-dirty") or None,
        "git_dirty": str(ctx.workflow.get("git") or "").endswith("-dirty"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "result_packages": dict(sorted(packages.items())),
        "packages": {p: package_version(p) for p in (*CORE_PACKAGES, "cairn")},
    }
    bundle.write_json("config/environment.json", environment)
    return environment


def _lineage(
    bundle: Bundle,
    order: list[Ancestor],
    steps: dict[str, str],
    name: str,
    model: str,
    evals: list[str],
    adapters: list[dict[str, Any]],
) -> dict[str, Any]:
    """lineage.json and the verbatim manifests it points to (each hashes to its digest), and
    each LoRA merge in the ancestry as base + adapter → model."""
    nodes = []
    for n in order:
        rel = f"lineage/manifests/{n.digest}.json"
        (bundle.root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = canonical_json(portable(n.manifest))
        (bundle.root / rel).write_bytes(data)
        nodes.append(
            {
                "digest": n.digest,
                "manifest_sha256": manifest_digest(data),
                "type": n.type,
                "kind": n.manifest.get("kind"),
                "step": n.manifest.get("step"),
                "output": n.manifest.get("output"),
                "uri": where(n),
                "run_id": (n.manifest.get("producer") or {}).get("run_id"),
                "manifest": rel,
                "copies": bundle.copies.get(n.digest, {}),
                **({"license": n.manifest.get("license")} if n.source else {}),
            }
        )
    lineage = {
        "format": LINEAGE_FORMAT,
        "release": {"name": name, "model": model, "evals": evals},
        "nodes": nodes,
        "edges": Ancestry({n.digest: n for n in order}).edges(),
        "lora_merges": [
            {k: a[k] for k in ("step", "base", "adapter", "model", "merge", "bundle_path")}
            for a in adapters
        ],
    }
    bundle.write_json("lineage.json", lineage)
    return lineage


__all__ = ["LINEAGE_FORMAT", "SUMS", "build"]
