"""One run's execution loop: start ready steps, reuse verified cache hits, poll, record.

`engine.py` owns runs (create, resume, cancel, liveness); `outcomes.py` writes down what happened
to each step. Every state change is committed to the database before it is acted on; MLflow
calls go through the engine's background tracker and are flushed before the run's final state
is written.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cairn.cluster import request_text
from cairn.db.models import ArtifactRow, Run, StepRun, StepRunArtifact, utcnow
from cairn.engine import RunResult, StepResult
from cairn.fingerprint import fingerprint
from cairn.outcomes import Outcomes, RunningStep
from cairn.runner import StepPayload
from cairn.spec import Step, Workflow
from cairn.stages.base import ArtifactType
from cairn.store import describe_source
from cairn.tracking import MetricPoint

if TYPE_CHECKING:
    from cairn.engine import Engine

METRICS_FLUSH_S = 5.0
PROGRESS_LOG_S = 5.0  # progress lines in the step log, at most this often


class Execution(Outcomes):
    """One run's execution loop."""

    def __init__(self, engine: Engine, wf: Workflow, run_id: str, resumed_from: str | None) -> None:
        self.e = engine
        self.wf = wf
        self.run_id = run_id
        self.resumed_from = resumed_from
        self.results = {n: StepResult(n, st.kind) for n, st in wf.steps.items()}
        self.outputs: dict[str, dict[str, dict[str, Any]]] = {}  # step -> output -> artifact info
        self.running: dict[str, RunningStep] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.reusable: set[str] = set()
        self.parent_mlflow: str = ""
        self.workflow_info: dict[str, Any] = {}
        self.cancelled = False
        self.log_dir = engine.settings.logs_dir(run_id)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._last_beat = 0.0

    # -- bookkeeping helpers ---------------------------------------------------------------
    def go(self) -> RunResult:
        e = self.e
        with e.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.state, run.started_at = "running", utcnow()
            run.driver_host, run.driver_pid, run.heartbeat_at = (
                socket.gethostname(),
                os.getpid(),
                utcnow(),
            )
            self.event(s, "run_started", f"running {self.wf.name} ({len(self.wf.steps)} steps)")
            if self.resumed_from:
                self.reusable = self._reusable_from(s, self.resumed_from)
            self.workflow_info = {
                "name": self.wf.name,
                "path": str(self.wf.path),
                "digest": self.wf.digest,
                "git": run.code_version,
                "text": self.wf.text,
            }
        self.e.display.update("run", state="running", message=self.run_id)
        self.parent_mlflow = e.tracker.start_run(
            self.run_id,
            self.wf.name,
            {
                "workflow": self.wf.name,
                "workflow_version": self.wf.version,
                "workflow_digest": self.wf.digest,
                "steps": ",".join(self.wf.steps),
            },
            {
                "cairn.workflow": self.wf.name,
                **({"cairn.resumed_from": self.resumed_from} if self.resumed_from else {}),
            },
        )
        with e.sessions.begin() as s:
            s.get_one(Run, self.run_id).mlflow_run_id = self.parent_mlflow
        error = None
        try:
            self._loop()
        except KeyboardInterrupt:
            self.cancelled, error = True, "interrupted"
            self._cancel_all("interrupted")
        except BaseException as ex:
            error = f"{type(ex).__name__}: {ex}"
            try:
                self._cancel_all(f"engine error: {error}")
            finally:
                self._finish(error)  # the run never stays `running` behind a dead driver
            raise
        return self._finish(error)

    def _loop(self) -> None:
        pending = list(self.wf.steps)
        while pending or self.running:
            self._heartbeat_and_cancel()
            if self.cancelled:
                self._cancel_all("run cancelled")
                return
            for name in list(pending):
                step = self.wf.steps[name]
                ups = step.upstream()
                if any(self.results[u].state in ("failed", "cancelled") for u in ups):
                    bad = next(u for u in ups if self.results[u].state in ("failed", "cancelled"))
                    self._skip(step, f"upstream step '{bad}' {self.results[bad].state}")
                    pending.remove(name)
                elif all(u in self.outputs for u in ups):
                    pending.remove(name)
                    self._start(step)
            if self.running:
                self._poll()

    def _heartbeat_and_cancel(self) -> None:
        if time.monotonic() - self._last_beat < 1.0:
            return
        self._last_beat = time.monotonic()
        with self.e.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.heartbeat_at = utcnow()
            if run.cancel_requested and not self.cancelled:
                self.cancelled = True
                self.event(s, "cancelling", "cancel requested: stopping running steps")

    # -- one step --------------------------------------------------------------------------
    def _start(self, step: Step) -> None:
        inputs = self._inputs(step)
        fp = fingerprint(
            step.spec, step.config, {k: [i["digest"] for i in v] for k, v in inputs.items()}
        )
        res = self.results[step.name]
        res.fingerprint = fp
        cached = self._lookup(step, fp)
        if cached is not None:
            self._record_cached(step, fp, inputs, cached)
        elif why := self.e.executor.check(step.resources, step.spec.launcher, step.name):
            self._unschedulable(step, fp, why)
        else:
            self._submit(step, fp, inputs, attempt=1)

    def _inputs(self, step: Step) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for slot, refs in step.inputs.items():
            items = []
            for ref in refs:
                if ref.uri is not None:
                    items.append(self._source(ref.uri, ref.text, step.spec.inputs[slot].type))
                else:
                    assert ref.step is not None and ref.output is not None  # validated spec
                    art = self.outputs[ref.step][ref.output]
                    items.append({**art, "name": ref.text})
            out[slot] = items
        return out

    def _source(self, uri: str, text: str, type_: ArtifactType) -> dict[str, Any]:
        if uri not in self.sources:
            digest, manifest = describe_source(uri, type_.value)
            with self.e.sessions.begin() as s:
                if s.get(ArtifactRow, digest) is None:
                    s.add(
                        ArtifactRow(
                            digest=digest,
                            type=type_.value,
                            uri=uri,
                            manifest=manifest,
                            size_bytes=sum(f["size"] for f in manifest["files"]),
                            file_count=len(manifest["files"]),
                        )
                    )
                self.event(
                    s, "source", f"source {text} → sha256 {digest[:12]}", uri=uri, digest=digest
                )
            # The URI travels to the stage too (InputArtifact.metadata["source_uri"]): curate's
            # Ray tasks read remote files where they lie, from any node, not from a driver copy.
            self.sources[uri] = {
                "uri": uri,
                "digest": digest,
                "type": type_.value,
                "metadata": {"source_uri": uri},
            }
        return {**self.sources[uri], "name": text}

    def _reusable_from(self, s: Any, run_id: str) -> set[str]:
        rows = s.scalars(
            select(StepRunArtifact.artifact_digest)
            .join(StepRun, StepRun.id == StepRunArtifact.step_run_id)
            .where(
                StepRun.run_id == run_id,
                StepRunArtifact.role == "output",
                StepRun.state.in_(("succeeded", "cached")),
            )
        )
        return set(rows)

    def _lookup(self, step: Step, fp: str) -> dict[str, dict[str, Any]] | None:
        """A verified artifact for every output of `fp`, or None (recompute)."""
        if not step.spec.cacheable:  # e.g. an endpoint: a live server cannot be reused
            return None
        with self.e.sessions.begin() as s:
            rows = s.scalars(
                select(ArtifactRow)
                .where(ArtifactRow.fingerprint == fp, ArtifactRow.status == "valid")
                .order_by(ArtifactRow.created_at.desc())
            ).all()
            latest: dict[str, ArtifactRow] = {}
            for r in rows:
                latest.setdefault(r.output_name or "", r)
            if set(latest) != set(step.spec.outputs):
                return None
            if not step.cache and not all(r.digest in self.reusable for r in latest.values()):
                return None
            found = {}
            for name, r in latest.items():
                self.e.display.update(
                    step.name, state="verifying", message=f"verifying cached {name}"
                )
                problems = self.e.store.verify(r.uri, r.digest)
                if problems:
                    r.status = "corrupt"
                    self.event(
                        s,
                        "cache_corrupt",
                        f"cached {name} {r.digest[:12]} no longer matches its manifest "
                        f"({'; '.join(problems[:5])}): recomputing",
                        step=step.name,
                        digest=r.digest,
                        problems=problems,
                    )
                    return None
                found[name] = {
                    "uri": r.uri,
                    "digest": r.digest,
                    "type": r.type,
                    "metadata": r.manifest.get("metadata", {}),
                }
            return found

    def _submit(
        self, step: Step, fp: str, inputs: dict[str, list[dict[str, Any]]], attempt: int
    ) -> None:
        tags = {"cairn.fingerprint": fp, "cairn.attempt": str(attempt)}
        mid = self._open_mlflow_step(step, inputs, tags)
        with self.e.sessions.begin() as s:
            sr = self._new_step_run(
                s,
                step,
                "running",
                attempt=attempt,
                fingerprint=fp,
                started_at=utcnow(),
                mlflow_run_id=mid,
            )
            self._link(s, sr.id, inputs, {})
            self.event(
                s,
                "step_started",
                f"{step.name}: attempt {attempt} started (fingerprint {fp[:12]}); requests "
                + request_text(step.resources, step.spec.launcher),
                sr.id,
                step=step.name,
                attempt=attempt,
                resources=step.resources.model_dump(),
            )
            sr_id = sr.id
        reporter = self.e.executor.reporter()
        payload = StepPayload(
            run_id=self.run_id,
            step=step.name,
            step_run_id=sr_id,
            kind=step.kind,
            config=step.config.model_dump(mode="json"),
            inputs=inputs,
            resources=step.resources.model_dump(),
            fingerprint=fp,
            store_root=self.e.store.root,
            checkpoint_dir=str(self.e.settings.checkpoint_dir(step.name, fp)),
            module=step.spec.run.__module__,
            workflow=self.workflow_info,
            compute=self._ancestors_compute(inputs) if step.spec.reads_compute else {},
        )
        try:
            handle = self.e.executor.submit(payload, step.spec.launcher, reporter)
        except BaseException as ex:
            with self.e.sessions.begin() as s:
                sr = s.get_one(StepRun, sr_id)
                sr.state, sr.finished_at, sr.error = "failed", utcnow(), f"could not start: {ex}"
            self.e.tracker.end(mid, "failed")
            self.results[step.name].state, self.results[step.name].error = "failed", str(ex)
            raise
        self.running[step.name] = RunningStep(step, sr_id, handle, reporter, fp, inputs, mid)
        self.results[step.name].attempts = attempt
        self.results[step.name].state = "running"
        self.e.display.update(step.name, state="running", message=f"attempt {attempt}")

    def _poll(self) -> None:
        done = self.e.executor.wait([r.handle for r in self.running.values()], timeout=0.5)
        self._record_cluster_changes(force=bool(done))
        for r in list(self.running.values()):
            self._drain(r)
        for h in done:
            r = next(x for x in self.running.values() if x.handle == h)
            del self.running[r.step.name]
            try:
                result = self.e.executor.result(r.handle)
            except BaseException as ex:  # the stage's failure: recorded, never swallowed
                self._drain(r, final=True)
                if self._failed(r, ex):
                    self._submit(
                        r.step, r.fingerprint, r.inputs, self.results[r.step.name].attempts + 1
                    )
            else:
                self._drain(r, final=True)
                self._succeeded(r, result)
            r.reporter.close()

    def _record_cluster_changes(self, force: bool = False) -> None:
        """Nodes that joined or left since the last look, as run events; `force` looks now
        (when a step ends, so a change right before the run finishes is not missed)."""
        changes = self.e.executor.cluster_changes(force)
        if changes:
            with self.e.sessions.begin() as s:
                for c in changes:
                    self.event(s, c["type"], c["message"], node=c["node"], resources=c["resources"])

    def _drain(self, r: RunningStep, final: bool = False) -> None:
        try:
            records = r.reporter.drain()
        except Exception as ex:  # the reporter actor died with its step; its records are lost
            self.write_log(r.step.name, f"[reporter] lost: {ex}")
            records = []
        for rec in records:
            t = rec.get("type")
            if t == "metrics":
                step_no = rec.get("step") or 0
                r.metrics.extend(
                    MetricPoint(k, v, step_no, rec["ts"]) for k, v in rec["values"].items()
                )
                self.e.display.metrics(r.step.name, rec["values"], step_no)
            elif t == "progress":
                self.e.display.update(
                    r.step.name, progress=(rec["done"], rec["total"]), message=rec["message"]
                )
                if time.monotonic() - r.last_progress_log >= PROGRESS_LOG_S:
                    r.last_progress_log = time.monotonic()
                    total = f"/{rec['total']:.0f}" if rec.get("total") else ""
                    self.write_log(
                        r.step.name, f"[progress] {rec['done']:.0f}{total} {rec['message']}"
                    )
            elif t == "log":
                self.write_log(r.step.name, rec["message"])
                self.e.display.log(r.step.name, rec["message"])
            elif t == "event":
                with self.e.sessions.begin() as s:
                    self.event(
                        s,
                        rec["event"],
                        f"{r.step.name}: {rec['message']}",
                        r.step_run_id,
                        step=r.step.name,
                        **rec.get("data", {}),
                    )
                self.e.display.log(r.step.name, rec["message"])
            elif t == "usage":
                r.usage[rec["usage"]["worker"]] = rec["usage"]
        if r.metrics and (
            final or len(r.metrics) >= 1000 or time.monotonic() - r.last_flush > METRICS_FLUSH_S
        ):
            self.e.tracker.log_metrics(r.mlflow_run_id, r.metrics)
            r.metrics, r.last_flush = [], time.monotonic()
