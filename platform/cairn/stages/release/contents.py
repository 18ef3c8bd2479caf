"""What a release bundle copies out of the model's ancestry: the model's checkpoints, the LoRA
adapters merged into it, the data cards and tokenizers, training logs, evaluation reports and
(with `include_sources`) the raw sources; `bundle.py` assembles them with the configs, lineage and provenance.

Every file copied out of an artifact is re-hashed while it is copied and must match that
artifact's manifest, and the bundle records where each copy came from (`lineage.json`, `copies`),
so `cairn audit` can check a bundle file against the manifest of the artifact it claims to be.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

from cairn.errors import CairnError, StageError
from cairn.stage import Ancestor
from cairn.stage.files import sha256_file
from cairn.stage.lineage import modified
from cairn.stages.curate import card
from cairn.stages.release.config import ReleaseConfig
from cairn.stages.release.contamination import summarise
from cairn.stages.release.sources import carried, curated_licenses, listed, where

SUMS = "SHA256SUMS"
DECONTAMINATION = "decontamination.jsonl"  # a dataset's contaminated documents, when it checked


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


def checkpoints(
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


def adapters(bundle: Bundle, order: list[Ancestor], steps: dict[str, str]) -> list[dict[str, Any]]:
    """Every LoRA adapter in the ancestry, copied whole to `adapters/<dir>/` (peft loads it onto
    its base: `PeftModel.from_pretrained(base, dir)`), with the merge it went into: the model a
    LoRA step made is its base (the step's input model) with this adapter merged in, and names
    it among its parents. Returns base + adapter + merge per adapter, for the cards and
    lineage.json."""
    out = []
    for n in order:
        if n.type != "adapter":
            continue
        rel = f"adapters/{steps[n.digest]}"
        bundle.copy_tree(n, "", rel)
        base = next((p for p in n.parents if p.get("slot") == "model"), {})
        merged = next((m for m in order if any(p["digest"] == n.digest for p in m.parents)), None)
        meta = n.manifest.get("metadata") or {}
        merge = ((merged.manifest.get("metadata") or {}).get("lora") or {}) if merged else {}
        out.append(
            {
                "step": n.step,
                "kind": n.manifest.get("kind"),
                "base": base.get("digest"),
                "base_name": base.get("name"),
                "adapter": n.digest,
                "model": merged.digest if merged else None,
                "merge": merge.get("merge"),
                "lora": meta.get("lora"),
                "trainable_parameters": meta.get("trainable_parameters"),
                "total_parameters": meta.get("total_parameters"),
                "bundle_path": rel,
            }
        )
    return out


def data(bundle: Bundle, order: list[Ancestor], steps: dict[str, str]) -> dict[str, Any]:
    """data/manifest.json: raw sources and imported models with digests and licences; per dataset the counts kept and removed
    by each filter, the tokenizer and the split, with dataset.json, the tokenizer and the
    dataset's data card copied. Returns the manifest with each dataset's dataset.json added."""
    sources = listed(order)
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
    curated_licenses(sources, datasets)
    bundle.write_json(
        "data/manifest.json",
        {
            "sources": sources,
            "datasets": [{k: v for k, v in d.items() if k != "record"} for d in datasets],
        },
    )
    return {"sources": sources, "datasets": datasets}


def training(bundle: Bundle, order: list[Ancestor], steps: dict[str, str]) -> list[dict[str, Any]]:
    """Per training step: metrics as JSONL and CSV, its loss (and reward) curve, rlvr's rollouts
    and its resolved config."""
    out = []
    for n in order:
        files = {f["path"] for f in n.manifest["files"]}
        if n.type != "model" or "training_metrics.jsonl" not in files:
            continue
        rel = f"training/{steps[n.digest]}"
        bundle.copy(n, "training_metrics.jsonl", f"{rel}/training_metrics.jsonl")
        # The plots, and what an rlvr step generated and how it scored (its rollouts).
        for extra in ("loss.png", "reward.png", "rollouts.jsonl"):
            if extra in files:
                bundle.copy(n, extra, f"{rel}/{extra}")
        rows = [
            json.loads(line)
            for line in (bundle.root / rel / "training_metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        write_csv(bundle.root / rel / "training_metrics.csv", rows)
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
                "has_rewards": "reward.png" in files,
            }
        )
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def evals(bundle: Bundle, evals: list[Ancestor], steps: dict[str, str]) -> list[dict[str, Any]]:
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
                # the evaluated model's step: the released one, or an ancestor (before/after)
                "model_step": steps.get(metadata.get("model_digest") or ""),
                "metrics": metadata.get("metrics") or {},
                "bundle_path": rel,
                "contamination": summarise(metadata),
                # Python from the task folder that lm-eval ran (evaluate/taskcode.py)
                "trust_task_code": bool(metadata.get("trust_task_code")),
                "task_code": list(metadata.get("task_code") or []),
            }
        )
    return out
