"""The decontamination gate: no score for a task whose data the model may have trained on unseen.

A curate step with an `eval_tasks` input checks every training document for n-gram overlap with
those task folders' data (curate/decontam.py) and records, in its dataset.json, the sha256 of
every data file it checked. Before lm-eval runs, this module walks the evaluated model's
lineage back through its manifests (`ctx.ancestry`, without re-hashing raw sources) and
collects every `dataset` artifact in it: each task to be scored must have all of its data files
(by sha256, so a copied or renamed folder still counts, and an edited file does not) checked by
EVERY one of them. Otherwise the step fails, naming the tasks, the datasets that did not check
them and the fix, unless the step says `allow_contaminated: true`, which is then written into
the report and the release.

What counts as unchecked, beyond a dataset that did not check a file:
- a model with no dataset in its lineage (an external Hugging Face directory, or an sft/dpo step
  on one): nothing about its training data was checked;
- a model in the lineage that was trained outside Cairn (an external directory given to a
  sft/dpo step): its pretraining data is unknown, whatever the later datasets checked;
- a task with no data files the stage can digest (a `class:` task loads its own data).
Raw parents (the corpus files, sft/dpo JSONL) are not walked: a dataset is where curate recorded
what it checked, and raw data fed straight to sft/dpo is not checked by anything (the report
says which steps those were, under `raw_training_inputs`).

Reading the lineage costs one small file read per artifact; raw sources are not re-hashed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import StageError
from cairn.stage import Ancestor, Context, InputArtifact
from cairn.stages.evaluate import taskdir
from cairn.stages.evaluate.config import EvaluateConfig

# Written by curate (curate/decontam.py): the record in dataset.json, one line per document.
DATASET_JSON = "dataset.json"
RECORD = "decontamination"
DOCUMENTS = "decontamination.jsonl"
NO_DATA = "no data files the stage can digest (a class: task loads its own data)"


@dataclass
class Dataset:
    """A dataset in the model's lineage and what its curate step checked."""

    step: str
    digest: str
    uri: str
    record: dict[str, Any] | None  # dataset.json's `decontamination`; None: nothing checked
    documents: list[dict[str, Any]] = field(default_factory=list)  # decontamination.jsonl

    @property
    def checked(self) -> set[str]:
        return set((self.record or {}).get("files", {}).values())

    def describe(self) -> str:
        return f"'{self.step}' (dataset {self.digest[:12]})"


@dataclass
class Lineage:
    """What the gate learns from the model's lineage."""

    datasets: list[Dataset] = field(default_factory=list)
    # trained outside Cairn, by the name the workflow gave them (the report holds no path of
    # the machine that ran it: see report.py); `paths` says where each lay, for error messages
    external_models: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)
    raw_training_inputs: list[dict[str, str]] = field(default_factory=list)  # sft/dpo data


def check(
    config: EvaluateConfig,
    model: InputArtifact,
    tasks_input: InputArtifact,
    tasks: taskdir.TaskDir,
    ctx: Context,
) -> dict[str, Any]:
    """The report's `contamination` record; raises StageError for unchecked tasks unless
    `config.allow_contaminated`."""
    lineage = walk(model, ctx)
    per_task: dict[str, dict[str, Any]] = {}
    unchecked: dict[str, list[str]] = {}
    for task in sorted(tasks.data):
        data = tasks.data[task]
        shas = {d["sha256"] for d in data}
        reasons = []
        if not data:
            reasons.append(NO_DATA)
        if not lineage.datasets:
            reasons.append("the model's lineage has no curated dataset")
        reasons += [f"model {name} was trained outside Cairn" for name in lineage.external_models]
        for d in lineage.datasets:
            files = [x["path"] for x in data if x["sha256"] not in d.checked]
            if files:
                reasons.append(f"dataset step {d.describe()} did not check {', '.join(files)}")
        per_task[task] = {
            "data": data,
            "checked_by": [d.step for d in lineage.datasets if data and shas <= d.checked],
            "contaminated_docs": _contaminated(lineage.datasets, shas),
        }
        if reasons:
            unchecked[task] = reasons
    if unchecked and not config.allow_contaminated:
        raise StageError(_refusal(unchecked, tasks_input, lineage.paths))
    # Over all tasks at once: a document overlapping two tasks is one document.
    every_sha = {d["sha256"] for data in tasks.data.values() for d in data}
    totals = _contaminated(lineage.datasets, every_sha)
    return {
        "allowed": config.allow_contaminated,
        "checked": not unchecked,
        "unchecked": unchecked,
        "contaminated_docs": totals,
        "tasks": per_task,
        "datasets": [
            {
                "step": d.step,
                "digest": d.digest,
                **{k: (d.record or {}).get(k) for k in ("ngram", "action", "items")},
                "files_checked": len((d.record or {}).get("files", {})),
            }
            for d in lineage.datasets
        ],
        "external_models": lineage.external_models,
        "raw_training_inputs": lineage.raw_training_inputs,
    }


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """The short form kept in the eval_report's metadata (and so in the release's)."""
    return {
        "allowed": record["allowed"],
        "checked": record["checked"],
        "unchecked_tasks": sorted(record["unchecked"]),
        "contaminated_docs": record["contaminated_docs"],
    }


def _refusal(
    unchecked: dict[str, list[str]], tasks_input: InputArtifact, paths: dict[str, str]
) -> str:
    folder = tasks_input.name or str(tasks_input.path)
    lines = [f"  {task}: {'; '.join(reasons)}" for task, reasons in unchecked.items()]
    lines += [f"  (model {name} is {path})" for name, path in sorted(paths.items()) if name != path]
    return (
        f"evaluate refuses to score {len(unchecked)} task(s) whose data was not checked against "
        "the evaluated model's training data (a model trained on its test items would score on "
        "memory):\n" + "\n".join(lines) + "\n"
        f"fix: add {folder} to the curate step's `eval_tasks` input (its documents are then "
        "checked against these files) and re-run, or set `allow_contaminated: true` on this "
        "evaluate step (recorded in its report and in the release)"
    )


def _contaminated(datasets: list[Dataset], shas: set[str]) -> dict[str, int]:
    """Training documents that contain items of these files, by action (removed / flagged);
    {} when none (or nothing was checked)."""
    out: dict[str, int] = {}
    for d in datasets:
        keys = {k for k, sha in (d.record or {}).get("files", {}).items() if sha in shas}
        for doc in d.documents:
            if any(ref.rsplit(":", 1)[0] in keys for ref in doc.get("items", [])):
                action = {"remove": "removed", "flag": "flagged"}.get(
                    str(doc.get("action")), "other"
                )
                out[action] = out.get(action, 0) + 1
    return out


# --- walking the lineage ------------------------------------------------------------------------


def walk(model: InputArtifact, ctx: Context) -> Lineage:
    """The datasets, external models and raw sft/dpo inputs behind `model`."""
    lineage = Lineage()
    graph = ctx.ancestry(model, verify_sources=False)
    for node in graph.topological():
        if node.source:
            if node.type == "model":  # a model directory no step made: trained outside Cairn
                # The evaluated model itself has no name in its node (ctx.ancestry walks it from
                # its path); the step knows how the workflow named it.
                named = model.name if node.digest == model.digest else ""
                name = named or str(node.manifest.get("source") or node.uri)
                lineage.external_models.append(name)
                lineage.paths[name] = node.uri
            continue
        if node.type == "dataset":
            lineage.datasets.append(_dataset(node))
        for p in node.parents:
            # data fed straight to a training step (sft, dpo)
            if p["type"] == "raw" and node.type == "model":
                lineage.raw_training_inputs.append(
                    {
                        "step": str(node.step),
                        "slot": str(p.get("slot", "")),
                        "uri": str(p.get("name") or p["uri"]),  # as the workflow wrote it
                    }
                )
    lineage.datasets.sort(key=lambda d: (d.step, d.digest))
    lineage.raw_training_inputs.sort(key=lambda r: (r["step"], r["slot"], r["uri"]))
    lineage.external_models.sort()
    return lineage


def _dataset(node: Ancestor) -> Dataset:
    step = node.step or node.digest[:12]
    info = node.read(DATASET_JSON)
    record = json.loads(info).get(RECORD) if info is not None else None
    documents = []
    if record:
        lines = node.read(DOCUMENTS)
        if lines is not None:
            documents = [json.loads(x) for x in lines.decode("utf-8").splitlines() if x.strip()]
    return Dataset(step, node.digest, node.uri, record or None, documents)
