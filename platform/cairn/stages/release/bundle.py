"""Assembling a release bundle from a model's ancestry (layout in the package docstring).

Every file copied out of an artifact is re-hashed while it is copied and must match that
artifact's manifest, and the bundle records where each copy came from (`lineage.json`, `copies`),
so `cairn audit` can check a bundle file against the manifest of the artifact it claims to be.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import sys
from pathlib import Path
from typing import Any

from cairn.errors import CairnError, StageError
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
from cairn.stage.lineage import modified
from cairn.stage.usage import add
from cairn.stages.curate import card
from cairn.stages.release.cards import data_card, model_card
from cairn.stages.release.config import ReleaseConfig
from cairn.stages.release.contamination import summarise
from cairn.stages.release.sources import carried, portable, where

LINEAGE_FORMAT = 1
SUMS = "SHA256SUMS"
DECONTAMINATION = "decontamination.jsonl"  # a dataset's contaminated documents, when it checked
# Packages whose versions a reader of the release wants whatever the steps declared.
CORE_PACKAGES = ("torch", "transformers", "tokenizers", "ray", "mlflow", "trl", "lm_eval")


class Bundle:
    """The release directory being written, and where each copied file came from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.copies: dict[str, dict[str, str]] = {}  # artifact digest -> {artifact path: bundle}

    def write_text(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def write_json(self, rel: str, data: Any) -> None:
        self.write_text(rel, json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    def copy(self, node: Ancestor, path: str, rel: str) -> None:
        """Copy `path` of artifact `node` to `rel`, checking it against the node's manifest."""
        entry = node.entry(path)
        if entry is None:
            raise CairnError(f"artifact {node.digest[:12]} ({node.uri}) has no file {path}")
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        with node.open(path) as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != entry["sha256"]:
            raise modified(node, path)
        self.copies.setdefault(node.digest, {})[path] = rel

    def copy_tree(self, node: Ancestor, prefix: str, rel: str) -> int:
        """Copy every file of `node` under `prefix` ('' = all) to `rel/`; returns bytes copied."""
        size = 0
        for f in node.manifest["files"]:
            if f["path"].startswith(prefix):
                self.copy(node, f["path"], f"{rel}/{f['path'][len(prefix) :]}")
                size += f["size"]
        return size

    def hashes(self) -> dict[str, str]:
        """{path: sha256} of every file written so far but SHA256SUMS."""
        return {
            rel: sha256_file(p)
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and (rel := p.relative_to(self.root).as_posix()) != SUMS
        }

    def checksums(self, hashes: dict[str, str]) -> str:
        """SHA256SUMS over `hashes`, every file but itself (sha256sum -c reads it)."""
        text = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(hashes.items()))
        (self.root / SUMS).write_text(text)
        return text


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
    checkpoints = _checkpoints(bundle, order, steps, config)
    if config.include_sources:
        carry_sources(bundle, order, config.include_sources_max_mb)

    ctx.progress(2, 7, "collecting data, training logs and evaluations")
    data = _data(bundle, order, steps)
    training = _training(bundle, order, steps)
    scores = _evals(bundle, [nodes[e.digest] for e in evals], steps)

    ctx.progress(3, 7, "writing configs and lineage")
    environment = _config(bundle, order, steps, ctx, name, config)
    lineage = _lineage(bundle, order, steps, name, model.digest, [e.digest for e in evals])
    compute = _compute(bundle, order, ctx.compute)

    ctx.progress(4, 7, "writing the model and data cards")
    facts = {
        "name": name,
        "config": config.model_dump(),
        "model": released.manifest,
        "model_digest": model.digest,
        "checkpoints": checkpoints,
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
    for e in evals:
        evaluated = [p["digest"] for p in nodes[e.digest].parents if p["type"] == "model"]
        if evaluated != [model]:
            got = ", ".join(d[:12] for d in evaluated) or "no model"
            raise StageError(
                f"release: eval report {e.name or e.digest[:12]} evaluated {got}, not the "
                f"released model {model[:12]}; fix: point the release's `evals` at evaluate "
                "steps whose input is the same model as the release's `model`"
            )


def _step_dirs(order: list[Ancestor]) -> dict[str, str]:
    """A directory name per artifact: its step's name (plus the output name or a digest
    prefix where two artifacts would share one)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for n in order:
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


def carry_sources(bundle: Bundle, order: list[Ancestor], max_mb: float) -> None:
    """A copy of every raw source named relative to the workflow, checked against its digest as
    it is copied (`bundle.copy`) and recorded in lineage.json's `copies`, so that `cairn
    reproduce` re-runs the workflow from the bundle alone and `cairn audit` checks each copy."""
    raw = [(n, rel) for n in order if n.source and (rel := carried(where(n)))]
    size = sum(f["size"] for n, _ in raw for f in n.manifest["files"])
    if size > max_mb * 2**20:
        largest = sorted(raw, key=lambda x: -sum(f["size"] for f in x[0].manifest["files"]))
        raise StageError(
            f"release: the raw sources take {size / 2**20:.1f} MB, more than "
            f"include_sources_max_mb ({max_mb:g}); the largest: "
            f"{', '.join(where(n) for n, _ in largest[:3])}; fix: raise include_sources_max_mb, "
            "or set include_sources: false (the release then records them by digest only)"
        )
    for n, rel in raw:
        files = n.manifest["files"]
        if len(files) == 1 and files[0]["path"] == rel.rsplit("/", 1)[-1]:
            bundle.copy(n, files[0]["path"], rel)  # a single-file source
        else:
            bundle.copy_tree(n, "", rel)


def _checkpoints(
    bundle: Bundle, order: list[Ancestor], steps: dict[str, str], config: ReleaseConfig
) -> list[dict[str, Any]]:
    """Every intermediate checkpoint of every training step in the ancestry: copied when they
    fit in `copy_checkpoints_max_gb`, else indexed by digest and URI."""
    found = []
    for n in order:
        if n.type == "model" and any(f["path"] == "checkpoints.json" for f in n.manifest["files"]):
            with n.open("checkpoints.json") as f:
                for row in json.load(f):
                    if "path" in row and not str(row["path"]).startswith("checkpoints/"):
                        continue  # an index from before checkpoints were exported
                    files = [
                        x for x in n.manifest["files"] if x["path"].startswith(row["path"] + "/")
                    ]
                    found.append((n, row, files))
    total = sum(x["size"] for _, _, files in found for x in files)
    copy = total <= config.copy_checkpoints_max_gb * 2**30
    index = []
    for n, row, files in found:
        rel = f"checkpoints/{steps[n.digest]}/{Path(row['path']).name}"
        if copy:
            bundle.copy_tree(n, row["path"] + "/", rel)
        index.append(
            {
                "step_name": n.manifest.get("step"),
                "artifact": n.digest,
                "step": row["step"],
                "tokens_seen": row.get("tokens_seen"),
                "path_in_artifact": row["path"],
                "copied": copy,
                "bundle_path": rel if copy else None,
                "uri": None if copy else f"{where(n)}/{row['path']}",
                "files": files,
            }
        )
    if index:
        bundle.write_json("checkpoints/index.json", index)
    return index


def _data(bundle: Bundle, order: list[Ancestor], steps: dict[str, str]) -> dict[str, Any]:
    """data/manifest.json: raw sources with digests; per dataset the counts kept and removed
    by each filter, the tokenizer and the split, with dataset.json, the tokenizer and the
    dataset's data card copied. Returns the manifest with each dataset's dataset.json added."""
    sources = [
        {
            "uri": where(n),
            "digest": n.digest,
            "files": len(n.manifest["files"]),
            "bytes": sum(f["size"] for f in n.manifest["files"]),
        }
        for n in order
        if n.type == "raw"
    ]
    datasets = []
    for n in order:
        if n.type != "dataset":
            continue
        files = {f["path"] for f in n.manifest["files"]}
        rel = f"data/{steps[n.digest]}"
        info: dict[str, Any] = {}
        if "dataset.json" in files:
            bundle.copy(n, "dataset.json", f"{rel}/dataset.json")
            info = json.loads((bundle.root / rel / "dataset.json").read_text())
        bundle.copy_tree(n, "tokenizer/", f"{rel}/tokenizer")
        if "documents.jsonl" in files:  # document ids: which text each training token came from
            bundle.copy(n, "documents.jsonl", f"{rel}/documents.jsonl")
        # The dataset's own data card (plots, removed examples, its DATA_CARD.md) and the list of
        # contaminated documents it points to; datasets curated before the card have none.
        card_files = sorted(
            p
            for p in files
            if p in (card.CARD_MD, DECONTAMINATION) or p.startswith(f"{card.CARD_DIR}/")
        )
        for path in card_files:
            bundle.copy(n, path, f"{rel}/{path}")
        datasets.append(
            {
                "step": n.manifest.get("step"),
                "digest": n.digest,
                "sources": info.get("sources", {}),
                "filters": info.get("filters", {}),
                "split": {
                    k: info.get(k)
                    for k in (
                        "train_sequences",
                        "validation_sequences",
                        "train_tokens",
                        "validation_tokens",
                    )
                }
                | {"val_fraction": (n.manifest.get("config") or {}).get("val_fraction")},
                "tokenizer": {
                    "vocab_size": info.get("vocab_size"),
                    "seq_len": info.get("seq_len"),
                    "files": [f for f in n.manifest["files"] if f["path"].startswith("tokenizer/")],
                },
                "config": n.manifest.get("config"),
                "bundle_path": rel,
                "card_files": card_files,
                "record": info,  # dataset.json itself, for the data card; not in the manifest
            }
        )
    bundle.write_json(
        "data/manifest.json",
        {
            "sources": sources,
            "datasets": [{k: v for k, v in d.items() if k != "record"} for d in datasets],
        },
    )
    return {"sources": sources, "datasets": datasets}


def _training(bundle: Bundle, order: list[Ancestor], steps: dict[str, str]) -> list[dict[str, Any]]:
    """Per training step: metrics as JSONL and CSV, its loss curve and its resolved config."""
    out = []
    for n in order:
        files = {f["path"] for f in n.manifest["files"]}
        if n.type != "model" or "training_metrics.jsonl" not in files:
            continue
        rel = f"training/{steps[n.digest]}"
        bundle.copy(n, "training_metrics.jsonl", f"{rel}/training_metrics.jsonl")
        if "loss.png" in files:
            bundle.copy(n, "loss.png", f"{rel}/loss.png")
        rows = [
            json.loads(line)
            for line in (bundle.root / rel / "training_metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        _write_csv(bundle.root / rel / "training_metrics.csv", rows)
        bundle.write_json(
            f"{rel}/config.json",
            {"kind": n.manifest.get("kind"), "config": n.manifest.get("config")},
        )
        out.append(
            {
                "step": n.manifest.get("step"),
                "kind": n.manifest.get("kind"),
                "digest": n.digest,
                "summary": n.manifest.get("metadata") or {},
                "bundle_path": rel,
                "has_plot": "loss.png" in files,
            }
        )
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _evals(bundle: Bundle, evals: list[Ancestor], steps: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for n in evals:
        rel = f"evals/{steps[n.digest]}"
        bundle.copy_tree(n, "", rel)
        metadata = n.manifest.get("metadata") or {}
        out.append(
            {
                "step": n.manifest.get("step"),
                "digest": n.digest,
                "model_digest": metadata.get("model_digest"),
                "metrics": metadata.get("metrics") or {},
                "bundle_path": rel,
                "contamination": summarise(metadata),
                # Python from the task folder that lm-eval ran (evaluate/taskcode.py)
                "trust_task_code": bool(metadata.get("trust_task_code")),
                "task_code": list(metadata.get("task_code") or []),
            }
        )
    return out


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
) -> dict[str, Any]:
    """lineage.json and the verbatim manifests it points to (each hashes to its digest)."""
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
            }
        )
    lineage = {
        "format": LINEAGE_FORMAT,
        "release": {"name": name, "model": model, "evals": evals},
        "nodes": nodes,
        "edges": Ancestry({n.digest: n for n in order}).edges(),
    }
    bundle.write_json("lineage.json", lineage)
    return lineage


__all__ = ["LINEAGE_FORMAT", "SUMS", "build"]
