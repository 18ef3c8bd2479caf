"""The `release` stage kind: one directory that publishes a model with everything that made it.

Input: the `model` to release and the `eval_report`s of it. The stage walks the model's whole
ancestry through the artifact store's manifests (`cairn.ancestry`) — back through dpo, sft and
pretrain to the curated dataset and the raw sources — and writes a bundle that anyone can check
with `cairn audit` without Cairn's database or store. The bundle is the directory
`<artifact>/<name>/` (the artifact's own manifest.json stays outside it):

    README.md, DATA_CARD.md     generated model and data cards
    model/                      the model in Hugging Face format with its tokenizer
    checkpoints/                every intermediate checkpoint (or an index of digests and URIs)
    data/                       raw sources with digests, curation counts, tokenizer, splits
    training/<step>/            metrics (JSONL + CSV), loss curves (PNG), resolved config
    evals/<step>/               evaluation reports with per-sample predictions
    config/                     workflow file, every step's resolved config, code and packages
    lineage.json, lineage/      the graph from raw sources to this model, verbatim manifests
    SHA256SUMS                  every file's sha256

The engine registers the released model in the MLflow Model Registry with its lineage tags.

The release's metadata also says, per evaluation, whether the evaluated tasks' data was checked
against the model's training data (`contamination`): each eval report carries that record
(evaluate/gate.py), and a reader of the release should not have to open report.json to learn
that a score was allowed through unchecked.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from cairn.stages.base import (
    ArtifactType,
    Context,
    InputArtifact,
    Inputs,
    InputSlot,
    Outputs,
    Resources,
    StageConfig,
    StageSpec,
)


class ReleaseConfig(StageConfig):
    """What the release says about itself; its contents come from the model's ancestry."""

    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="release name (and MLflow registered model name); default: the workflow's",
    )
    description: str = Field("", description="a paragraph for the model card's opening")
    license: str = Field("Apache-2.0", description="licence of the released weights and code")
    limitations: str = Field(
        "A small research model trained on a narrow corpus: it produces plausible-looking but "
        "unreliable text and must not be used for decisions about people.",
        description="the model card's limitations section",
    )
    copy_checkpoints_max_gb: float = Field(
        2.0,
        ge=0,
        description="copy intermediate checkpoints into the bundle up to this total size; "
        "above it, list them with digests and URIs instead",
    )
    register_in_mlflow: bool = Field(
        True,
        description="register the model in the MLflow Model Registry",
        json_schema_extra={"identity": False},
    )


def run(config: ReleaseConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Assemble the bundle (see the module docstring) under ctx.output_path('release')."""
    from cairn.stages.release.bundle import build

    outputs = build(config, inputs, ctx)
    record = contamination(inputs)
    outputs["release"]["contamination"] = record
    for step, entry in record.items():
        ctx.log(f"release: {step}: {describe(entry)}")
    return outputs


def contamination(inputs: Inputs) -> dict[str, dict[str, Any]]:
    """Per eval step (the bundle's evals/<step>/), `summarise` of its report's metadata."""
    given = inputs.get("evals") or []
    evals = given if isinstance(given, list) else [given]
    out: dict[str, dict[str, Any]] = {}
    for e in evals:
        step = _step(e)
        if step in out:
            step = f"{step}-{e.digest[:8]}"
        out[step] = summarise(e.metadata or {})
    return out


def summarise(metadata: dict[str, Any]) -> dict[str, Any]:
    """{recorded, allowed, checked, unchecked_tasks, contaminated_docs} from an eval_report's
    metadata; `recorded: false` for a report made before evaluate recorded contamination."""
    summary = metadata.get("contamination")
    if not isinstance(summary, dict):
        return {"recorded": False, "allowed": None, "checked": None}
    return {
        "recorded": True,
        "allowed": bool(metadata.get("allow_contaminated", summary.get("allowed"))),
        "checked": bool(summary.get("checked")),
        "unchecked_tasks": list(summary.get("unchecked_tasks") or []),
        "contaminated_docs": dict(summary.get("contaminated_docs") or {}),
    }


def describe(entry: dict[str, Any]) -> str:
    """One line on an eval's contamination check (a `summarise` entry), for the log and the
    model card."""
    if not entry["recorded"]:
        return "contamination check not recorded (report made before Cairn recorded it)"
    docs = ", ".join(f"{n} {a}" for a, n in sorted(entry["contaminated_docs"].items()))
    found = f"; overlapping training documents: {docs}" if docs else ""
    if entry["checked"]:
        return "every task's data was checked against the training data" + found
    tasks = ", ".join(entry["unchecked_tasks"])
    return f"NOT checked against the training data (allow_contaminated: true): {tasks}" + found


def _step(e: InputArtifact) -> str:
    """The step that made an eval report, from its manifest (the bundle's evals/<step>/)."""
    from cairn.store import MANIFEST  # here: the registry imports every kind to list them

    manifest = e.path / MANIFEST
    if manifest.is_file():
        step = json.loads(manifest.read_text(encoding="utf-8")).get("step")
        if step:
            return str(step)
    return e.name or e.digest[:12]


SPEC = StageSpec(
    kind="release",
    config_model=ReleaseConfig,
    inputs={
        "model": InputSlot(ArtifactType.MODEL, doc="the model to release"),
        "evals": InputSlot(
            ArtifactType.EVAL_REPORT,
            many=True,
            optional=True,
            doc="evaluation reports of that same model",
        ),
    },
    outputs={"release": ArtifactType.RELEASE},
    run=run,
    reads_compute=True,
    default_resources=Resources(num_workers=1, cpus_per_worker=1),
    doc=(
        "Publish a model with its full ancestry: weights, checkpoints, data manifest, configs, "
        "logs, evals, model and data cards, lineage.json and SHA256SUMS (see `cairn audit`)."
    ),
)

__all__ = ["SPEC", "ReleaseConfig", "contamination", "describe", "run", "summarise"]
