"""The `release` stage kind: one directory that publishes a model with everything that made it.

Input: the `model` to release and the `eval_report`s of it. The stage walks the model's whole
ancestry through the sealed manifests (`ctx.ancestry`) — back through dpo, sft and
pretrain to the curated dataset and the raw sources — and writes a bundle that anyone can check
with `cairn audit` without Cairn's database or store. The bundle is the directory
`<artifact>/<name>/` (the artifact's own manifest.json stays outside it):

    README.md, DATA_CARD.md     generated model and data cards
    model/                      the model in Hugging Face format with its tokenizer
    checkpoints/                every intermediate checkpoint (or an index of digests and URIs)
    adapters/<step>-adapter/    each LoRA adapter merged into the model or an ancestor (peft)
    data/                       raw sources with digests, curation counts, tokenizer, splits
    training/<step>/            metrics (JSONL + CSV), loss curves (PNG), resolved config
    evals/<step>/               evaluation reports with per-sample predictions
    config/                     workflow file, every step's resolved config, code and packages
    lineage.json, lineage/      the graph from raw sources to this model, verbatim manifests
    provenance.intoto.json      SLSA provenance (in-toto Statement v1): the workflow, every raw
                                source and imported model by digest, every file as a subject
    SHA256SUMS                  every file's sha256 (the statement's too)

`cairn release sign` adds `release.sig` (OpenSSF model signing, outside SHA256SUMS: it signs
every other file).

The engine registers the released model in the MLflow Model Registry with its lineage tags.

The release's metadata also says, per evaluation, whether the evaluated tasks' data was checked
against the model's training data (`contamination`): each eval report carries that record
(evaluate/gate.py), and a reader of the release should not have to open report.json to learn
that a score was allowed through unchecked.
"""

from __future__ import annotations

from cairn.stage import (
    ArtifactType,
    Context,
    Inputs,
    InputSlot,
    Outputs,
    Resources,
    StageSpec,
    register,
)
from cairn.stages.release.config import ReleaseConfig
from cairn.stages.release.contamination import contamination, describe, summarise


def run(config: ReleaseConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Assemble the bundle (see the module docstring) under ctx.output_path('release')."""
    from cairn.stages.release.bundle import build

    outputs = build(config, inputs, ctx)
    record = contamination(inputs)
    outputs["release"]["contamination"] = record
    for step, entry in record.items():
        ctx.log(f"release: {step}: {describe(entry)}")
    return outputs


SPEC = register(
    StageSpec(
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
        reads_licenses=True,
        default_resources=Resources(num_workers=1, cpus_per_worker=1),
        doc=(
            "Publish a model with its full ancestry: weights, checkpoints, data manifest, configs, "
            "logs, evals, model and data cards, lineage.json, SLSA provenance and SHA256SUMS (see "
            "`cairn audit`, `cairn release sign`)."
        ),
    )
)

__all__ = ["SPEC", "ReleaseConfig", "contamination", "describe", "run", "summarise"]
