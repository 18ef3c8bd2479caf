"""What happened to each step, written down: database rows, events, logs and MLflow.

The bookkeeping half of a run's execution (`execution.py` holds the loop that schedules and
polls). Every outcome is committed to Cairn's database first; MLflow gets the same facts
through the engine's background tracker.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cairn.accounting import add, summarise
from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, StepRunArtifact, utcnow
from cairn.engine import RunResult, StepResult
from cairn.errors import StepCancelled
from cairn.spec import Step, Workflow
from cairn.stages.base import ArtifactType
from cairn.tracking import DatasetRef, MetricPoint, TrackingError

if TYPE_CHECKING:
    from cairn.engine import Engine


@dataclass
class RunningStep:
    step: Step
    step_run_id: int
    handle: Any
    reporter: Any
    fingerprint: str
    inputs: dict[str, list[dict[str, Any]]]
    mlflow_run_id: str
    metrics: list[MetricPoint] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    last_progress_log: float = 0.0
    # Latest usage record per worker process (cairn.accounting), stored on the step run at the end.
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)


class Outcomes:
    """Recording of step and run outcomes; `Execution` supplies the state below."""

    e: Engine
    wf: Workflow
    run_id: str
    results: dict[str, StepResult]
    outputs: dict[str, dict[str, dict[str, Any]]]
    running: dict[str, RunningStep]
    parent_mlflow: str
    cancelled: bool
    log_dir: Path

    def event(
        self, s: Any, type_: str, message: str, step_run_id: int | None = None, **data: Any
    ) -> None:
        s.add(
            Event(
                run_id=self.run_id, step_run_id=step_run_id, type=type_, message=message, data=data
            )
        )
        step = data.get("step")
        self.write_log(step or "run", f"[{type_}] {message}")

    def write_log(self, step: str, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.log_dir / f"{step}.log", "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")

    # -- the loop --------------------------------------------------------------------------
    def _new_step_run(self, s: Any, step: Step, state: str, **fields: Any) -> StepRun:
        """Insert a step run row (flushed, so it has an id) for `step` in this run."""
        sr = StepRun(
            run_id=self.run_id,
            step=step.name,
            kind=step.kind,
            state=state,
            config=step.config.model_dump(mode="json"),
            resources=step.resources.model_dump(),
            **{"attempt": 1, **fields},
        )
        s.add(sr)
        s.flush()
        return sr

    def _open_mlflow_step(
        self, step: Step, inputs: dict[str, list[dict[str, Any]]], tags: dict[str, str]
    ) -> str:
        """A nested MLflow run for a step run, with its inputs as datasets (placeholder id)."""
        mid = self.e.tracker.start_step(
            self.parent_mlflow,
            self.run_id,
            step.name,
            step.config.model_dump(mode="json"),
            {"cairn.kind": step.kind, **tags},
        )
        self.e.tracker.log_datasets(mid, _datasets(inputs))
        return mid

    def _record_cached(
        self,
        step: Step,
        fp: str,
        inputs: dict[str, list[dict[str, Any]]],
        arts: dict[str, dict[str, Any]],
    ) -> None:
        now = utcnow()
        tags = {"cairn.state": "cached", "cairn.fingerprint": fp, **_digest_tags(arts)}
        mid = self._open_mlflow_step(step, inputs, tags)
        self.e.tracker.end(mid, "cached")
        with self.e.sessions.begin() as s:
            sr = self._new_step_run(
                s,
                step,
                "cached",
                fingerprint=fp,
                started_at=now,
                finished_at=now,
                mlflow_run_id=mid,
            )
            self._link(s, sr.id, inputs, arts)
            self.event(
                s,
                "cached",
                f"{step.name}: cache hit, fingerprint {fp[:12]}",
                sr.id,
                step=step.name,
                artifacts={k: v["digest"] for k, v in arts.items()},
            )
        self._done(step, "cached", arts, attempts=1)

    def _link(
        self,
        s: Any,
        sr_id: int,
        inputs: dict[str, list[dict[str, Any]]],
        outputs: dict[str, dict[str, Any]],
    ) -> None:
        for slot, items in inputs.items():
            for i in items:
                s.add(
                    StepRunArtifact(
                        step_run_id=sr_id, artifact_digest=i["digest"], role="input", name=slot
                    )
                )
        for name, a in outputs.items():
            s.add(
                StepRunArtifact(
                    step_run_id=sr_id, artifact_digest=a["digest"], role="output", name=name
                )
            )

    def _mirror_results(self, r: RunningStep, arts: dict[str, Any]) -> None:
        """Eval scores go to MLflow tied to the model they score; a release is registered."""
        for a in arts.values():
            meta = a["manifest"].get("metadata") or {}
            if a["type"] == ArtifactType.EVAL_REPORT and meta.get("metrics"):
                self.e.tracker.log_model_metrics(
                    r.mlflow_run_id, str(meta.get("model_digest")), meta["metrics"]
                )
            if a["type"] == ArtifactType.RELEASE and meta.get("register", True):
                local = self.e.store.local_path(a["uri"], a["digest"])
                self.e.tracker.register_model(
                    r.mlflow_run_id,
                    str(meta["name"]),
                    str(local / str(meta.get("bundle", "")) / "model"),
                    {
                        "cairn.run_id": self.run_id,
                        "cairn.step": r.step.name,
                        # Not cairn.artifact_digest: that tag finds *the* LoggedModel of a
                        # model artifact (eval scores are tied to it); this one is a copy.
                        "cairn.model_digest": str(meta["model_digest"]),
                        "cairn.release_digest": a["digest"],
                        **_lineage_tags(local / str(meta.get("bundle", ""))),
                    },
                )

    def _succeeded(self, r: RunningStep, result: dict[str, Any]) -> None:
        arts = result["artifacts"]
        with self.e.sessions.begin() as s:
            for name, a in arts.items():
                m = a["manifest"]
                s.add(
                    ArtifactRow(
                        digest=a["digest"],
                        type=a["type"],
                        uri=a["uri"],
                        fingerprint=r.fingerprint,
                        output_name=name,
                        step_run_id=r.step_run_id,
                        manifest=m,
                        size_bytes=sum(f["size"] for f in m["files"]),
                        file_count=len(m["files"]),
                    )
                )
            s.flush()
            for a in arts.values():
                for slot, items in r.inputs.items():
                    for i in items:
                        s.add(
                            LineageEdge(
                                parent_digest=i["digest"],
                                child_digest=a["digest"],
                                step_run_id=r.step_run_id,
                                slot=slot,
                            )
                        )
            self._link(s, r.step_run_id, {}, arts)
            sr = s.get_one(StepRun, r.step_run_id)
            sr.state, sr.finished_at = "succeeded", utcnow()
            sr.node_id, sr.worker = result.get("node"), result.get("worker")
            sr.usage = self._record_usage(r)
            self.event(
                s,
                "step_succeeded",
                f"{r.step.name}: succeeded → "
                + ", ".join(f"{k} {v['digest'][:12]}" for k, v in arts.items()),
                r.step_run_id,
                step=r.step.name,
                artifacts={k: v["digest"] for k, v in arts.items()},
            )
        for name, a in arts.items():
            if a["type"] in (ArtifactType.MODEL, ArtifactType.CHECKPOINT):
                local = self.e.store.local_path(a["uri"], a["digest"])
                self.e.tracker.log_model(
                    r.mlflow_run_id,
                    f"{r.step.name}-{name}",
                    str(local),
                    {
                        "cairn.run_id": self.run_id,
                        "cairn.step": r.step.name,
                        "cairn.artifact_digest": a["digest"],
                    },
                )
        self._mirror_results(r, arts)
        self.e.tracker.set_tags(r.mlflow_run_id, {"cairn.state": "succeeded", **_digest_tags(arts)})
        self.e.tracker.end(r.mlflow_run_id, "succeeded")
        info = {
            k: {
                "uri": v["uri"],
                "digest": v["digest"],
                "type": v["type"],
                "metadata": v["manifest"].get("metadata", {}),
            }
            for k, v in arts.items()
        }
        self._done(r.step, "succeeded", info, attempts=self.results[r.step.name].attempts)

    def _record_usage(self, r: RunningStep) -> dict[str, Any] | None:
        """The step run's compute totals (also to MLflow), from its workers' usage records."""
        if not r.usage:
            return None
        usage = summarise(list(r.usage.values()))
        ts = int(time.time() * 1000)
        self.e.tracker.log_metrics(
            r.mlflow_run_id,
            [
                MetricPoint(f"compute/{k}", float(usage[k]), 0, ts)
                for k in ("worker_seconds", "cpu_seconds", "gpu_seconds", "cpu_time_seconds")
            ]
            + [MetricPoint("compute/peak_rss_bytes", float(usage["peak_rss_bytes"]), 0, ts)],
        )
        return usage

    def _ancestors_compute(self, inputs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """{digest: {run_id, step, kind, attempts, usage}} for every artifact above `inputs`;
        usage sums every attempt of the producing step in its run up to the one that produced
        it, because failed attempts cost compute too."""
        out: dict[str, Any] = {}
        todo = [i["digest"] for items in inputs.values() for i in items]
        with self.e.sessions() as s:
            while todo:
                digest = todo.pop()
                row = s.get(ArtifactRow, digest)
                if digest in out or row is None:
                    continue
                out[digest] = None
                todo.extend(
                    s.scalars(
                        select(LineageEdge.parent_digest).where(LineageEdge.child_digest == digest)
                    )
                )
                made = s.get(StepRun, row.step_run_id) if row.step_run_id else None
                if made is None:
                    continue
                attempts = s.scalars(
                    select(StepRun).where(
                        StepRun.run_id == made.run_id,
                        StepRun.step == made.step,
                        StepRun.attempt <= made.attempt,
                    )
                ).all()
                totals: dict[str, float] = {}
                for a in attempts:
                    add(totals, a.usage)
                out[digest] = {
                    "run_id": made.run_id,
                    "step": made.step,
                    "kind": made.kind,
                    "attempts": len(attempts),
                    "usage": totals,
                }
        return {k: v for k, v in out.items() if v is not None}

    def _failed(self, r: RunningStep, ex: BaseException) -> bool:
        """Record a failed attempt; True when the step has a retry left (recorded too)."""
        cancelled = isinstance(ex, StepCancelled) or self.cancelled
        state = "cancelled" if cancelled else "failed"
        msg = f"{type(ex).__name__}: {ex}"
        attempt = self.results[r.step.name].attempts
        with self.e.sessions.begin() as s:
            sr = s.get_one(StepRun, r.step_run_id)
            sr.state, sr.finished_at, sr.error = state, utcnow(), msg
            sr.usage = self._record_usage(r)
            detail = "".join(traceback.format_exception(ex))[-4000:]
            self.event(
                s,
                f"step_{state}",
                f"{r.step.name}: attempt {attempt} {state}: {msg}",
                r.step_run_id,
                step=r.step.name,
                attempt=attempt,
                traceback=detail,
            )
        self.write_log(r.step.name, detail)
        self.e.tracker.set_tags(r.mlflow_run_id, {"cairn.state": state, "cairn.error": msg[:5000]})
        self.e.tracker.end(r.mlflow_run_id, state)
        if not cancelled and attempt <= r.step.retries:
            with self.e.sessions.begin() as s:
                self.event(
                    s,
                    "retry",
                    f"{r.step.name}: retrying ({attempt + 1} of {r.step.retries + 1})",
                    step=r.step.name,
                    attempt=attempt + 1,
                )
            return True
        self.results[r.step.name].error = msg
        self._done(r.step, state, {}, attempts=attempt)
        return False

    def _unschedulable(self, step: Step, fp: str, why: str) -> None:
        """A step no node of the cluster can ever hold: failed now, not left waiting."""
        with self.e.sessions.begin() as s:
            sr = self._new_step_run(
                s, step, "failed", fingerprint=fp, finished_at=utcnow(), error=why
            )
            self.event(s, "step_unschedulable", f"{step.name}: {why}", sr.id, step=step.name)
        self.results[step.name].error = why
        self._done(step, "failed", {}, attempts=1)

    def _skip(self, step: Step, why: str) -> None:
        with self.e.sessions.begin() as s:
            sr = self._new_step_run(s, step, "cancelled", finished_at=utcnow(), error=why)
            self.event(s, "step_cancelled", f"{step.name}: not run ({why})", sr.id, step=step.name)
        self.results[step.name].error = why
        self._done(step, "cancelled", {}, attempts=0)

    def _done(self, step: Step, state: str, arts: dict[str, dict[str, Any]], attempts: int) -> None:
        res = self.results[step.name]
        res.state, res.attempts = state, attempts
        res.artifacts = {
            k: {
                "digest": v["digest"],
                "uri": v["uri"],
                "type": v["type"],
                "metadata": v.get("metadata", {}),
            }
            for k, v in arts.items()
        }
        if state in ("succeeded", "cached"):
            self.outputs[step.name] = arts
        self.e.display.update(step.name, state=state, message=res.error or "")

    def _cancel_all(self, why: str) -> None:
        for r in list(self.running.values()):
            try:
                r.reporter.cancel()
                self.e.executor.cancel(r.handle)
            except Exception as ex:  # already finished or its worker is gone: still mark it
                self.write_log(r.step.name, f"[cancel] {ex}")
            with self.e.sessions.begin() as s:
                sr = s.get_one(StepRun, r.step_run_id)
                sr.state, sr.finished_at, sr.error = "cancelled", utcnow(), why
                self.event(
                    s,
                    "step_cancelled",
                    f"{r.step.name}: cancelled ({why})",
                    sr.id,
                    step=r.step.name,
                )
            self.e.tracker.end(r.mlflow_run_id, "cancelled")
            self.results[r.step.name].state = "cancelled"
            self.results[r.step.name].error = why
        self.running.clear()
        for name, res in self.results.items():
            if res.state == "pending":
                self._skip(self.wf.steps[name], why)

    def _finish(self, error: str | None) -> RunResult:
        try:
            self.e.tracker.flush()  # the lineage in MLflow is part of the result
        except TrackingError as ex:
            error = f"{error}; {ex}" if error else str(ex)
        states = {r.state for r in self.results.values()}
        if self.cancelled:
            state = "cancelled"
        elif error or "failed" in states or "cancelled" in states:
            state = "failed"
        else:
            state = "succeeded"
        failed = [n for n, r in self.results.items() if r.state == "failed"]
        if state == "failed" and not error and failed:
            error = "; ".join(f"{n}: {self.results[n].error}" for n in failed)
        with self.e.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.state, run.finished_at, run.error = state, utcnow(), error
            self.event(s, "run_finished", f"run {state}" + (f": {error}" if error else ""))
        if self.parent_mlflow:
            self.e.tracker.set_tags(self.parent_mlflow, {"cairn.state": state})
            self.e.tracker.end(self.parent_mlflow, state)
        try:
            self.e.tracker.flush()
        except TrackingError as ex:  # the state is final already; say so in the event log
            with self.e.sessions.begin() as s:
                self.event(s, "tracking_failed", str(ex))
        self._resolve_mlflow_ids()
        self.e.display.update("run", state=state)
        return RunResult(self.run_id, state, self.results, error)

    def _resolve_mlflow_ids(self) -> None:
        """Placeholders the tracker thread resolved before the engine stored them."""
        with self.e.sessions.begin() as s:
            rows = [
                s.get_one(Run, self.run_id),
                *s.scalars(select(StepRun).where(StepRun.run_id == self.run_id)),
            ]
            for row in rows:
                if row.mlflow_run_id and row.mlflow_run_id.startswith("pending:"):
                    try:
                        row.mlflow_run_id = self.e.tracker.real_id(row.mlflow_run_id)
                    except KeyError:  # its creation failed: reported as tracking_failed
                        row.mlflow_run_id = None


def _datasets(inputs: dict[str, list[dict[str, Any]]]) -> list[DatasetRef]:
    return [
        DatasetRef(
            name=i.get("name") or slot, digest=i["digest"], uri=i["uri"], type=i["type"], slot=slot
        )
        for slot, items in inputs.items()
        for i in items
    ]


def _digest_tags(arts: dict[str, dict[str, Any]]) -> dict[str, str]:
    if len(arts) == 1:
        return {"cairn.artifact_digest": next(iter(arts.values()))["digest"]}
    return {f"cairn.artifact_digest.{k}": v["digest"] for k, v in arts.items()}


def _lineage_tags(release_dir: Path) -> dict[str, str]:
    """`cairn.lineage.<step>` = digest for every artifact the release descends from, and the
    raw sources' digests: enough to find the whole chain from the registered model."""
    data = json.loads((release_dir / "lineage.json").read_text())
    tags = {f"cairn.lineage.{n['step']}": n["digest"] for n in data["nodes"] if n.get("step")}
    tags["cairn.lineage.sources"] = ",".join(
        n["digest"] for n in data["nodes"] if n["type"] == "raw"
    )[:5000]
    return tags
