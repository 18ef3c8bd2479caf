"""MLflow mirrors a run: one parent run, a nested run per step run, models, scores, the release.

MLflow holds no state Cairn needs (the database does), so everything here goes through the
engine's background tracker and never blocks a step; `flush` waits for it before the run's final
state is written. The tracker starts when the first step executes: a run whose steps are all
cache hits hands its calls to a process of their own instead (`cairn.engine.handoff`), so that
nobody waits seconds for MLflow to load only to record cache hits. Tags `cairn.run_id`,
`cairn.step` and `cairn.artifact_digest` join the two worlds; datasets carry Cairn's own sha256
digests. Lineage reads in MLflow itself: a step's input models are model inputs of its run (the
LoggedModels their steps logged), so the registered release walks back model → model → dataset;
a cache hit's run names the run that computed its artifacts (`cairn.computed_by`); the parent
run carries the workflow's description and, once released, the release's digest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cairn.artifacts.store import ArtifactStore
from cairn.stage import ArtifactType
from cairn.tracking import DatasetRef, MetricPoint, digest_tags
from cairn.tracking.background import BackgroundTracker
from cairn.workflow import Step, Workflow

Inputs = dict[str, list[dict[str, Any]]]

# Inputs of these types are models: MLflow links them as model inputs, not datasets.
MODELS = (ArtifactType.MODEL.value, ArtifactType.CHECKPOINT.value)


class Mirror:
    """One run's MLflow side."""

    def __init__(self, tracker: BackgroundTracker, store: ArtifactStore, run_id: str) -> None:
        self.tracker = tracker
        self.store = store
        self.run_id = run_id
        self.parent = ""
        self.note = ""
        self.steps: dict[str, Step] = {}  # by the step run's MLflow id: its config and kind
        self.releases: dict[str, str] = {}  # release name → digest, for the parent run

    def start_run(self, wf: Workflow, resumed_from: str | None) -> str:
        # The run's description in MLflow's UI (the "mlflow.note.content" tag).
        self.note = (
            wf.description.strip() or f"Cairn workflow `{wf.name}`"
        ) + f"\n\nCairn run `{self.run_id}`, workflow version {wf.version}, digest `{wf.digest}`."
        self.parent = self.tracker.start_run(
            self.run_id,
            wf.name,
            {
                "workflow": wf.name,
                "workflow_version": wf.version,
                "workflow_digest": wf.digest,
                "steps": ",".join(wf.steps),
            },
            {
                "cairn.workflow": wf.name,
                "mlflow.note.content": self.note,
                **({"cairn.resumed_from": resumed_from} if resumed_from else {}),
            },
        )
        return self.parent

    def open_step(self, step: Step, inputs: Inputs, tags: dict[str, str]) -> str:
        """A nested run for a step attempt about to execute, with its inputs as datasets (a
        placeholder id). The tracker starts now: the step will stream metrics to it."""
        self.tracker.start()
        return self._nested(step, inputs, tags)

    def _nested(self, step: Step, inputs: Inputs, tags: dict[str, str]) -> str:
        refs = _datasets(inputs)
        licenses = _licenses(inputs)
        note = f"Step `{step.name}` ({step.kind}) of Cairn run `{self.run_id}`.\n\n" + "\n".join(
            f"- reads `{d.name}` ({d.type}, digest `{d.digest}`"
            + (f", licence {lic}" if (lic := licenses.get((d.slot, d.name))) else "")
            + ")"
            for d in refs
        )
        mid = self.tracker.start_step(
            self.parent,
            self.run_id,
            step.name,
            step.config.model_dump(mode="json"),
            {
                "cairn.kind": step.kind,
                "mlflow.note.content": note,
                **_license_tags(inputs),
                **tags,
            },
        )
        self.steps[mid] = step
        self.tracker.log_datasets(mid, [d for d in refs if d.type not in MODELS])
        models = [d for d in refs if d.type in MODELS]
        if models:
            self.tracker.log_model_inputs(mid, models)
        return mid

    def cached(self, step: Step, fp: str, inputs: Inputs, arts: dict[str, Any]) -> str:
        """A cache hit's nested run, pointing to the run that computed its artifacts; held with
        the rest while no step has executed."""
        digests = {k: a["digest"] for k, a in arts.items()}
        tags = {"cairn.state": "cached", "cairn.fingerprint": fp, **digest_tags(digests)}
        mid = self._nested(step, inputs, tags)
        self.tracker.link_cached(mid, fp, digests)
        self._note_release(arts)
        self.tracker.end(mid, "cached")
        return mid

    def metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        self.tracker.log_metrics(mlflow_run_id, points)

    def usage(self, mlflow_run_id: str, usage: dict[str, Any]) -> None:
        """A step run's compute totals (`cairn.stage.usage.summarise`) as `compute/*` metrics."""
        ts = int(time.time() * 1000)
        self.tracker.log_metrics(
            mlflow_run_id,
            [
                MetricPoint(f"compute/{k}", float(usage[k]), 0, ts)
                for k in ("worker_seconds", "cpu_seconds", "gpu_seconds", "cpu_time_seconds")
            ]
            + [MetricPoint("compute/peak_rss_bytes", float(usage["peak_rss_bytes"]), 0, ts)],
        )

    def succeeded(self, step: str, mlflow_run_id: str, arts: dict[str, Any]) -> None:
        """Models and checkpoints as LoggedModels, eval scores tied to the model they score, a
        release registered; then the step run's tags and its end."""
        config = self._config(mlflow_run_id)
        for name, a in arts.items():
            if a["type"] in MODELS:
                local = self.store.local_path(a["uri"], a["digest"])
                self.tracker.log_model(
                    mlflow_run_id,
                    f"{step}-{name}",
                    str(local),
                    {
                        "cairn.run_id": self.run_id,
                        "cairn.step": step,
                        "cairn.artifact_digest": a["digest"],
                        "cairn.uri": a["uri"],
                        "mlflow.note.content": (
                            f"`{step}.{name}` of Cairn run `{self.run_id}`, content digest "
                            f"`{a['digest']}`. Its files stay in Cairn's store (`{a['uri']}`): "
                            "MLflow holds no copy of a model that is not released."
                        ),
                    },
                    config,
                )
        for a in arts.values():
            meta = a["manifest"].get("metadata") or {}
            if a["type"] == ArtifactType.EVAL_REPORT and meta.get("metrics"):
                self.tracker.log_model_metrics(
                    mlflow_run_id, str(meta.get("model_digest")), meta["metrics"]
                )
            if a["type"] == ArtifactType.RELEASE and meta.get("register", True):
                self._register(step, mlflow_run_id, a, meta)
        self._note_release(arts)
        digests = {k: a["digest"] for k, a in arts.items()}
        self.tracker.set_tags(mlflow_run_id, {"cairn.state": "succeeded", **digest_tags(digests)})
        self.tracker.end(mlflow_run_id, "succeeded")

    def _config(self, mlflow_run_id: str) -> dict[str, Any]:
        step = self.steps.get(mlflow_run_id)
        return step.config.model_dump(mode="json") if step else {}

    def _note_release(self, arts: dict[str, Any]) -> None:
        for a in arts.values():
            if a["type"] == ArtifactType.RELEASE:
                meta = a.get("metadata") or a.get("manifest", {}).get("metadata") or {}
                self.releases[str(meta.get("name", "release"))] = a["digest"]

    def _register(
        self, step: str, mlflow_run_id: str, art: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        bundle = self.store.local_path(art["uri"], art["digest"]) / str(meta.get("bundle", ""))
        self.tracker.register_model(
            mlflow_run_id,
            str(meta["name"]),
            str(bundle / "model"),
            {
                "cairn.run_id": self.run_id,
                "cairn.step": step,
                # Not cairn.artifact_digest: that tag finds *the* LoggedModel of a model
                # artifact (eval scores are tied to it); this one is a copy.
                "cairn.model_digest": str(meta["model_digest"]),
                "cairn.release_digest": art["digest"],
                **_lineage_tags(bundle),
            },
            self._config(mlflow_run_id),
        )

    def failed(self, mlflow_run_id: str, state: str, message: str) -> None:
        self.tracker.set_tags(mlflow_run_id, {"cairn.state": state, "cairn.error": message[:5000]})
        self.tracker.end(mlflow_run_id, state)

    def end(self, mlflow_run_id: str, state: str) -> None:
        self.tracker.end(mlflow_run_id, state)

    def finish(self, state: str) -> None:
        if self.parent:
            tags = {"cairn.state": state}
            if self.releases:  # the release's digest on the run and in its description
                if len(self.releases) == 1:
                    tags["cairn.release_digest"] = next(iter(self.releases.values()))
                else:
                    tags |= {f"cairn.release_digest.{n}": d for n, d in self.releases.items()}
                tags["mlflow.note.content"] = self.note + "".join(
                    f"\n\nRelease `{n}`: digest `{d}`." for n, d in self.releases.items()
                )
            self.tracker.set_tags(self.parent, tags)
            self.tracker.end(self.parent, state)

    def flush(self) -> None:
        """Wait for every call so far; raises `TrackingError` naming the first that failed."""
        self.tracker.flush()


def _datasets(inputs: Inputs) -> list[DatasetRef]:
    return [
        DatasetRef(
            name=i.get("name") or slot, digest=i["digest"], uri=i["uri"], type=i["type"], slot=slot
        )
        for slot, items in inputs.items()
        for i in items
    ]


def _licenses(inputs: Inputs) -> dict[tuple[str, str], str]:
    """{(slot, name): licence} of the external inputs whose licence the workflow states."""
    return {
        (slot, i.get("name") or slot): str(i["license"])
        for slot, items in inputs.items()
        for i in items
        if i.get("license")
    }


def _license_tags(inputs: Inputs) -> dict[str, str]:
    """`cairn.input.<slot>.license`: the licence stated for the slot's input (for a slot of
    several inputs, `name: licence` for each, "not declared" where none is stated)."""
    tags = {}
    for slot, items in inputs.items():
        if not any(i.get("license") for i in items):
            continue
        if len(items) == 1:
            value = str(items[0]["license"])
        else:
            value = "; ".join(
                f"{i.get('name') or i['digest'][:12]}: {i.get('license') or 'not declared'}"
                for i in items
            )
        tags[f"cairn.input.{slot}.license"] = value[:5000]
    return tags


def _lineage_tags(release_dir: Path) -> dict[str, str]:
    """`cairn.lineage.<step>` = digest for every artifact the release descends from, and the
    raw sources' digests: enough to find the whole chain from the registered model."""
    data = json.loads((release_dir / "lineage.json").read_text())
    tags = {f"cairn.lineage.{n['step']}": n["digest"] for n in data["nodes"] if n.get("step")}
    # The roots: raw sources and models imported from outside (no step made them).
    tags["cairn.lineage.sources"] = ",".join(
        n["digest"] for n in data["nodes"] if n["type"] == "raw" or not n.get("step")
    )[:5000]
    return tags
