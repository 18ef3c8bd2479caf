"""One run's execution loop: start ready steps, reuse verified cache hits, poll, record.

Split from `engine.py` (which owns runs: create, resume, cancel, liveness). Every state change
here is committed to the database before it is acted on; MLflow calls go through the engine's
background tracker and are flushed before the run's final state is written.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, StepRunArtifact, utcnow
from cairn.engine import RunResult, StepResult
from cairn.errors import StepCancelled
from cairn.fingerprint import fingerprint
from cairn.runner import StepPayload
from cairn.spec import Step, Workflow
from cairn.stages.base import ArtifactType
from cairn.store import describe_source
from cairn.tracking import DatasetRef, MetricPoint, TrackingError

if TYPE_CHECKING:
    from cairn.engine import Engine

METRICS_FLUSH_S = 5.0
PROGRESS_LOG_S = 5.0  # progress lines in the step log, at most this often


@dataclass
class _Running:
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


class Execution:
    """One run's execution loop."""

    def __init__(self, engine: Engine, wf: Workflow, run_id: str, resumed_from: str | None) -> None:
        self.e = engine
        self.wf = wf
        self.run_id = run_id
        self.resumed_from = resumed_from
        self.results = {n: StepResult(n, st.kind) for n, st in wf.steps.items()}
        self.outputs: dict[str, dict[str, dict[str, Any]]] = {}  # step -> output -> artifact info
        self.running: dict[str, _Running] = {}
        self.sources: dict[str, dict[str, Any]] = {}
        self.reusable: set[str] = set()
        self.parent_mlflow: str = ""
        self.cancelled = False
        self.log_dir = engine.settings.logs_dir(run_id)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._last_beat = 0.0

    # -- bookkeeping helpers ---------------------------------------------------------------
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
            self.sources[uri] = {"uri": uri, "digest": digest, "type": type_.value, "metadata": {}}
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
                f"{step.name}: attempt {attempt} started (fingerprint {fp[:12]})",
                sr.id,
                step=step.name,
                attempt=attempt,
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
        self.running[step.name] = _Running(step, sr_id, handle, reporter, fp, inputs, mid)
        self.results[step.name].attempts = attempt
        self.results[step.name].state = "running"
        self.e.display.update(step.name, state="running", message=f"attempt {attempt}")

    def _poll(self) -> None:
        done = self.e.executor.wait([r.handle for r in self.running.values()], timeout=0.5)
        for r in list(self.running.values()):
            self._drain(r)
        for h in done:
            r = next(x for x in self.running.values() if x.handle == h)
            del self.running[r.step.name]
            try:
                result = self.e.executor.result(r.handle)
            except BaseException as ex:  # the stage's failure: recorded, never swallowed
                self._drain(r, final=True)
                self._failed(r, ex)
            else:
                self._drain(r, final=True)
                self._succeeded(r, result)
            r.reporter.close()

    def _drain(self, r: _Running, final: bool = False) -> None:
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
        if r.metrics and (
            final or len(r.metrics) >= 1000 or time.monotonic() - r.last_flush > METRICS_FLUSH_S
        ):
            self.e.tracker.log_metrics(r.mlflow_run_id, r.metrics)
            r.metrics, r.last_flush = [], time.monotonic()

    def _succeeded(self, r: _Running, result: dict[str, Any]) -> None:
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

    def _failed(self, r: _Running, ex: BaseException) -> None:
        cancelled = isinstance(ex, StepCancelled) or self.cancelled
        state = "cancelled" if cancelled else "failed"
        msg = f"{type(ex).__name__}: {ex}"
        attempt = self.results[r.step.name].attempts
        with self.e.sessions.begin() as s:
            sr = s.get_one(StepRun, r.step_run_id)
            sr.state, sr.finished_at, sr.error = state, utcnow(), msg
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
            self._submit(r.step, r.fingerprint, r.inputs, attempt + 1)
            return
        self.results[r.step.name].error = msg
        self._done(r.step, state, {}, attempts=attempt)

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
            k: {"digest": v["digest"], "uri": v["uri"], "type": v["type"]} for k, v in arts.items()
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
