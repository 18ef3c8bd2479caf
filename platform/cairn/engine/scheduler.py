"""One run's loop: start ready steps, reuse verified cache hits, poll, and hand every outcome on.

The scheduler decides; it receives the parts that act through its constructor: the executor
that runs attempts (Ray, or threads in unit tests), the recorder that commits each decision to
Cairn's database before it is acted on, the mirror that copies it to MLflow, the lineage that
sends OpenLineage events (when configured), the artifact store that verifies cache hits, and the
display that shows progress. It holds no state that outlives the run: `cairn resume` rebuilds
everything from the database and the cache.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from cairn.artifacts.store import ArtifactStore, describe_source
from cairn.engine import cache, handoff, leases
from cairn.engine.attempt import StepPayload
from cairn.engine.backends import Executor
from cairn.engine.cluster import request_text
from cairn.engine.fingerprint import fingerprint
from cairn.engine.mirror import Mirror
from cairn.engine.openlineage import Lineage
from cairn.engine.progress import Display
from cairn.engine.recorder import Inputs, Recorder
from cairn.errors import CairnError, StepCancelled
from cairn.results import Artifact, RunResult, StepResult
from cairn.settings import Settings
from cairn.stage import ArtifactType
from cairn.stage.usage import summarise
from cairn.tracking import MetricPoint, TrackingError
from cairn.workflow import Step, Workflow, repo_relative

METRICS_FLUSH_S = 5.0
LEASE_POLL_S = 0.5  # how often a step waiting for another run's lease looks again
PROGRESS_LOG_S = 5.0  # progress lines in the step log, at most this often


@dataclass
class WaitingStep:
    """A step another live run is computing (it holds the fingerprint's lease)."""

    step: Step
    fingerprint: str
    inputs: Inputs


@dataclass
class RunningStep:
    """An attempt in flight, and what its reports have accumulated so far."""

    step: Step
    step_run_id: int
    handle: Any
    reporter: Any
    fingerprint: str
    inputs: Inputs
    mlflow_run_id: str
    metrics: list[MetricPoint] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    last_progress_log: float = 0.0
    # Latest usage record per worker process (cairn.stage.usage), stored on the step run at the end.
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)


class Scheduler:
    """Runs one workflow run to its end (see the module docstring)."""

    def __init__(
        self,
        wf: Workflow,
        run_id: str,
        *,
        resumed_from: str | None,
        executor: Executor,
        recorder: Recorder,
        mirror: Mirror,
        lineage: Lineage,
        store: ArtifactStore,
        settings: Settings,
        display: Display,
    ) -> None:
        self.wf = wf
        self.run_id = run_id
        self.resumed_from = resumed_from
        self.executor = executor
        self.recorder = recorder
        self.mirror = mirror
        self.lineage = lineage
        self.store = store
        self.settings = settings
        self.display = display
        self.results = {n: StepResult(n, st.kind) for n, st in wf.steps.items()}
        self.outputs: dict[str, dict[str, dict[str, Any]]] = {}  # step -> output -> artifact info
        self.running: dict[str, RunningStep] = {}
        self.waiting: dict[str, WaitingStep] = {}
        self._last_look = 0.0
        self.sources: dict[str, dict[str, Any]] = {}
        self.resumed: set[str] = set()  # what the run being resumed made (cache: false too)
        self.workflow_info: dict[str, Any] = {}
        self.cancelled = False
        self._last_beat = 0.0

    # -- the run -------------------------------------------------------------------------------
    def go(self) -> RunResult:
        git, self.resumed = self.recorder.start_run(
            f"running {self.wf.name} ({len(self.wf.steps)} steps)", self.resumed_from
        )
        self.workflow_info = {
            "name": self.wf.name,
            # Where the file lies in its repository, never on this machine: manifests and
            # releases carry this record.
            "file": repo_relative(self.wf.path),
            "digest": self.wf.digest,
            "git": git,
            "text": self.wf.text,
        }
        self.display.update("run", state="running", message=self.run_id)
        self.recorder.set_mlflow_run(self.mirror.start_run(self.wf, self.resumed_from))
        self.lineage.run_started(self.resumed_from)
        error = None
        try:
            self._loop()
        except KeyboardInterrupt:
            self.cancelled, error = True, "interrupted"
            self._cancel_all("interrupted")
        except BaseException as ex:
            error = str(ex) if isinstance(ex, CairnError) else f"{type(ex).__name__}: {ex}"
            if isinstance(ex, CairnError):
                ex.run_id = self.run_id
            try:
                self._cancel_all(f"engine error: {error}")
            finally:
                leases.release(self.recorder.sessions, self.run_id)
                self._finish(error)  # the run never stays `running` behind a dead driver
            raise
        leases.release(self.recorder.sessions, self.run_id)  # any a cancel left
        return self._finish(error)

    def _loop(self) -> None:
        pending = list(self.wf.steps)
        while pending or self.running or self.waiting:
            self._heartbeat_and_cancel()
            if self.cancelled:
                self._cancel_all("run cancelled")
                return
            for name in list(pending):
                step = self.wf.steps[name]
                ups = step.upstream()
                bad = next(
                    (u for u in ups if self.results[u].state in ("failed", "cancelled")), None
                )
                if bad is not None:
                    self._skip(step, f"upstream step '{bad}' {self.results[bad].state}")
                    pending.remove(name)
                elif all(u in self.outputs for u in ups):
                    pending.remove(name)
                    self._start(step)
            self._look_again()
            if self.running:
                self._poll()
            elif self.waiting:
                time.sleep(LEASE_POLL_S / 5)

    def _heartbeat_and_cancel(self) -> None:
        if time.monotonic() - self._last_beat < 1.0:
            return
        self._last_beat = time.monotonic()
        if self.recorder.heartbeat() and not self.cancelled:
            self.cancelled = True
            self.recorder.cancelling()

    def _finish(self, error: str | None) -> RunResult:
        all_cached = (
            error is None
            and not self.cancelled
            and all(r.state == "cached" for r in self.results.values())
        )
        if not all_cached:
            try:
                self.mirror.flush()  # the lineage in MLflow is part of the result
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
        self.mirror.finish(state)
        handed_off = all_cached and self._hand_off_mirror()
        self.recorder.finish(state, error)
        self.lineage.run_finished(state, error)
        if not handed_off:
            try:
                self.mirror.flush()
            except TrackingError as ex:  # the state is final already; say so in the event log
                self.recorder.tracking_failed(str(ex))
            self.recorder.resolve_mlflow_ids(self.mirror.tracker.real_id)
        self.display.update("run", state=state)
        return RunResult(self.run_id, state, self.results, error)

    def _hand_off_mirror(self) -> bool:
        """A run of cache hits only: its MLflow mirror is written by a process of its own
        (`cairn.engine.handoff`), so the run does not wait for MLflow to load. False where the
        tracker already runs here, or cannot be rebuilt elsewhere (a test's in-memory one)."""
        if not self.mirror.tracker.portable:
            return False
        calls = self.mirror.tracker.take_held()
        if calls is None:
            return False
        try:
            pid = handoff.start(self.settings, self.run_id, calls)
        except OSError as ex:  # no process, or no journal: mirrored here after all
            self.recorder.write_log("run", f"[mirror] not handed off ({ex}): mirroring here")
            self.mirror.tracker.replay(calls)
            return False
        self.recorder.mirror_handed_off(len(calls), pid, self.settings.logs_dir(self.run_id))
        return True

    def _cancel_all(self, why: str) -> None:
        for r in list(self.running.values()):
            try:
                r.reporter.cancel()
                self.executor.cancel(r.handle)
            except Exception as ex:  # already finished or its worker is gone: still mark it
                self.recorder.write_log(r.step.name, f"[cancel] {ex}")
            self.recorder.cancelled(r.step, r.step_run_id, why)
            self.lineage.step_failed(
                r.step, self.results[r.step.name].attempts, r.fingerprint, "cancelled", why
            )
            self.mirror.end(r.mlflow_run_id, "cancelled")
            self.results[r.step.name].state = "cancelled"
            self.results[r.step.name].error = why
        self.running.clear()
        self.waiting.clear()  # still `pending`: skipped below
        for name, res in self.results.items():
            if res.state == "pending":
                self._skip(self.wf.steps[name], why)

    # -- one step ------------------------------------------------------------------------------
    def _start(self, step: Step) -> None:
        try:
            inputs = self._inputs(step)
        except Exception as ex:  # an input that cannot be read: this step fails, not the run
            unreadable = self._message(step.name, ex)
            self.recorder.write_log(step.name, "".join(traceback.format_exception(ex)))
            self.recorder.unreadable_input(step, unreadable)
            self.lineage.step_not_run(step, "failed", unreadable)
            self.results[step.name].error = unreadable
            self._done(step, "failed", {}, attempts=1)
            return
        fp = fingerprint(
            step.spec,
            step.config,
            {k: [i["digest"] for i in v] for k, v in inputs.items()},
            self._licenses(step),
        )
        self.results[step.name].fingerprint = fp
        self._lease_then_run(step, fp, inputs)

    def _lease_then_run(self, step: Step, fp: str, inputs: Inputs) -> None:
        """Take the step's lease (cairn.engine.leases), then reuse a cached result or start
        the step; while another live run holds the lease, wait for its result. The cache is
        looked at while the lease is held, so no run can seal the step in between."""
        got: leases.Taken | leases.Held = leases.Taken()
        if step.spec.cacheable:  # a kind that always runs shares nothing to wait for
            got = leases.take(self.recorder.sessions, fp, self.run_id, step.name)
        if isinstance(got, leases.Held):
            if step.name not in self.waiting:
                self.recorder.waiting(step.name, fp, got.run_id, got.step)
                self.display.update(step.name, state="waiting", message=f"run {got.run_id}")
            self.waiting[step.name] = WaitingStep(step, fp, inputs)
            return
        self.waiting.pop(step.name, None)
        hit = cache.lookup(step, fp, self.recorder, self.store, self.display, self.resumed)
        if hit is not None:
            self._cached(step, fp, inputs, hit)
        elif why := self.executor.check(step.resources, step.spec.launcher, step.name):
            self.recorder.unschedulable(step, fp, why)
            self.lineage.step_not_run(step, "failed", why, fp)
            self.results[step.name].error = why
            self._done(step, "failed", {}, attempts=1)
        else:
            if got.from_run:
                self.recorder.lease_taken_over(step.name, fp, got.from_run)
            self._submit(step, fp, inputs, attempt=1)

    def _cached(self, step: Step, fp: str, inputs: Inputs, hit: cache.Hit) -> None:
        mid = self.mirror.cached(step, fp, inputs, hit.artifacts)
        self.recorder.cached(step, fp, inputs, hit.artifacts, mid, hit.reused)
        self.lineage.step_cached(step, fp, inputs, hit.artifacts, hit.reused)
        self._done(step, "cached", hit.artifacts, attempts=1)

    def _look_again(self) -> None:
        """Steps waiting on another run: once it gave the lease back (its result sealed, or it
        failed, or its driver died), the lease is this run's, and the cache says which."""
        if not self.waiting or time.monotonic() - self._last_look < LEASE_POLL_S:
            return
        self._last_look = time.monotonic()
        for w in list(self.waiting.values()):
            self._lease_then_run(w.step, w.fingerprint, w.inputs)

    def _inputs(self, step: Step) -> Inputs:
        out: Inputs = {}
        for slot, refs in step.inputs.items():
            items = []
            for ref in refs:
                if ref.uri is not None:
                    try:
                        type_ = step.spec.inputs[slot].type
                        items.append(self._source(ref.uri, ref.text, type_, ref.license))
                    except CairnError as e:  # where in the workflow file the source is named
                        where = f"{self.wf.path}:{step.line}" if step.line else str(self.wf.path)
                        raise CairnError(
                            f"{where}: steps.{step.name}.inputs.{slot}: '{ref.text}': {e}"
                        ) from e
                else:
                    assert ref.step is not None and ref.output is not None  # validated spec
                    art = self.outputs[ref.step][ref.output]
                    items.append({**art, "name": ref.text})
            out[slot] = items
        return out

    def _source(
        self, uri: str, text: str, type_: ArtifactType, license: str | None = None
    ) -> dict[str, Any]:
        if uri not in self.sources:
            digest, manifest = describe_source(uri, type_.value, text)
            self.recorder.source(uri, text, digest, manifest, license)
            # The URI travels to the stage too (InputArtifact.metadata["source_uri"]): curate's
            # Ray tasks read remote files where they lie, from any node, not from a driver copy.
            self.sources[uri] = {
                "uri": uri,
                "digest": digest,
                "type": type_.value,
                "metadata": {"source_uri": uri},
            }
        # The licence is the workflow's statement about this use of the source (recorded with
        # it in the child's manifest), not part of the source, which another step may name too.
        return {**self.sources[uri], "name": text, **({"license": license} if license else {})}

    def _licenses(self, step: Step) -> dict[str, str]:
        """{source digest: licence} the workflow states for the sources upstream of `step` (its
        own inputs included), for a kind that publishes them (`StageSpec.reads_licenses`); {} for
        any other. Every upstream step has digested its sources before this one starts."""
        if not step.spec.reads_licenses:
            return {}
        found: dict[str, str] = {}
        todo, seen = [step.name], set()
        while todo:
            name = todo.pop()
            here = self.wf.steps.get(name)
            if name in seen or here is None:
                continue
            seen.add(name)
            todo += here.upstream()
            for refs in here.inputs.values():
                for ref in refs:
                    source = self.sources.get(ref.uri or "")
                    if ref.license and source:
                        found.setdefault(source["digest"], ref.license)
        return found

    def _submit(self, step: Step, fp: str, inputs: Inputs, attempt: int) -> None:
        tags = {"cairn.fingerprint": fp, "cairn.attempt": str(attempt)}
        mid = self.mirror.open_step(step, inputs, tags)
        request = request_text(step.resources, step.spec.launcher)
        sr_id = self.recorder.started(step, fp, attempt, inputs, mid, request)
        reporter = self.executor.reporter()
        payload = StepPayload(
            run_id=self.run_id,
            step=step.name,
            step_run_id=sr_id,
            kind=step.kind,
            config=step.config.model_dump(mode="json"),
            inputs=inputs,
            resources=step.resources.model_dump(),
            fingerprint=fp,
            store_root=self.store.root,
            cache_dir=str(self.store.cache_dir),
            checkpoint_dir=str(self.settings.checkpoint_dir(step.name, fp)),
            module=step.spec.run.__module__,
            workflow=self.workflow_info,
            compute=self.recorder.ancestors_compute(inputs) if step.spec.reads_compute else {},
            licenses=self._licenses(step),
        )
        try:
            handle = self.executor.submit(payload, step.spec.launcher, reporter)
        except BaseException as ex:
            self.recorder.not_started(sr_id, ex)
            self.mirror.end(mid, "failed")
            self.results[step.name].state, self.results[step.name].error = "failed", str(ex)
            raise
        self.running[step.name] = RunningStep(step, sr_id, handle, reporter, fp, inputs, mid)
        self.results[step.name].attempts = attempt
        self.results[step.name].state = "running"
        self.lineage.step_started(step, attempt, fp, inputs)
        self.display.update(step.name, state="running", message=f"attempt {attempt}")

    def _poll(self) -> None:
        done = self.executor.wait([r.handle for r in self.running.values()], timeout=0.5)
        changes = self.executor.cluster_changes(bool(done))
        if changes:  # nodes that joined or left: a change right before the run ends counts too
            self.recorder.cluster_events(changes)
        for r in list(self.running.values()):
            self._drain(r)
        for h in done:
            r = next(x for x in self.running.values() if x.handle == h)
            del self.running[r.step.name]
            try:
                result = self.executor.result(r.handle)
            except BaseException as ex:  # the stage's failure: recorded, never swallowed
                self._drain(r, final=True)
                if self._failed(r, ex):
                    attempt = self.results[r.step.name].attempts + 1
                    self._submit(r.step, r.fingerprint, r.inputs, attempt)
            else:
                self._drain(r, final=True)
                self._succeeded(r, result)
            r.reporter.close()

    def _drain(self, r: RunningStep, final: bool = False) -> None:
        """What the stage reported since the last look: metrics (batched to MLflow), progress,
        log lines, events and compute usage."""
        try:
            records = r.reporter.drain()
        except Exception as ex:  # the reporter actor died with its step; its records are lost
            self.recorder.write_log(r.step.name, f"[reporter] lost: {ex}")
            records = []
        for rec in records:
            t = rec.get("type")
            if t == "metrics":
                step_no = rec.get("step") or 0
                r.metrics.extend(
                    MetricPoint(k, v, step_no, rec["ts"]) for k, v in rec["values"].items()
                )
                self.display.metrics(r.step.name, rec["values"], step_no)
            elif t == "progress":
                self.display.update(
                    r.step.name, progress=(rec["done"], rec["total"]), message=rec["message"]
                )
                if time.monotonic() - r.last_progress_log >= PROGRESS_LOG_S:
                    r.last_progress_log = time.monotonic()
                    total = f"/{rec['total']:.0f}" if rec.get("total") else ""
                    self.recorder.write_log(
                        r.step.name, f"[progress] {rec['done']:.0f}{total} {rec['message']}"
                    )
            elif t == "log":
                self.recorder.write_log(r.step.name, rec["message"])
                self.display.log(r.step.name, rec["message"])
            elif t == "event":
                self.recorder.step_event(
                    r.step.name, r.step_run_id, rec["event"], rec["message"], **rec.get("data", {})
                )
                self.display.log(r.step.name, rec["message"])
            elif t == "usage":
                r.usage[rec["usage"]["worker"]] = rec["usage"]
        if r.metrics and (
            final or len(r.metrics) >= 1000 or time.monotonic() - r.last_flush > METRICS_FLUSH_S
        ):
            self.mirror.metrics(r.mlflow_run_id, r.metrics)
            r.metrics, r.last_flush = [], time.monotonic()

    def _usage(self, r: RunningStep) -> dict[str, Any] | None:
        """The attempt's compute totals from its workers' usage records (also to MLflow)."""
        if not r.usage:
            return None
        usage = summarise(list(r.usage.values()))
        self.mirror.usage(r.mlflow_run_id, usage)
        return usage

    def _succeeded(self, r: RunningStep, result: dict[str, Any]) -> None:
        arts = result["artifacts"]
        usage = self._usage(r)
        self.recorder.succeeded(r.step, r.step_run_id, r.fingerprint, r.inputs, arts, result, usage)
        self.mirror.succeeded(r.step.name, r.mlflow_run_id, arts)
        info = {
            k: {
                "uri": v["uri"],
                "digest": v["digest"],
                "type": v["type"],
                "metadata": v["manifest"].get("metadata", {}),
            }
            for k, v in arts.items()
        }
        attempt = self.results[r.step.name].attempts
        self.lineage.step_succeeded(r.step, attempt, r.fingerprint, r.inputs, info)
        self._done(r.step, "succeeded", info, attempts=attempt)

    def _failed(self, r: RunningStep, ex: BaseException) -> bool:
        """Record a failed attempt; True when the step has a retry left (recorded too)."""
        cancelled = isinstance(ex, StepCancelled) or self.cancelled
        state = "cancelled" if cancelled else "failed"
        msg = self._message(r.step.name, ex)
        attempt = self.results[r.step.name].attempts
        detail = "".join(traceback.format_exception(ex))[-8000:]
        self.recorder.failed(r.step, r.step_run_id, attempt, state, msg, detail, self._usage(r))
        self.mirror.failed(r.mlflow_run_id, state, msg)
        self.lineage.step_failed(r.step, attempt, r.fingerprint, state, msg)
        if not cancelled and attempt <= r.step.retries:
            self.recorder.retry(r.step, attempt + 1)
            return True
        self.results[r.step.name].error = msg
        self._done(r.step, state, {}, attempts=attempt)
        return False

    def _message(self, step: str, ex: BaseException) -> str:
        """What the user reads for a failure (status, --json, the database, MLflow's
        cairn.error): a `CairnError`'s own message, written for them; for anything else (a bug)
        its type and first line, and where its traceback is."""
        if isinstance(ex, CairnError):
            return str(ex)
        first = (str(ex).strip().splitlines() or [""])[0][:500]
        return f"{type(ex).__name__}: {first} (traceback in {self.recorder.log_path(step)})"

    def _skip(self, step: Step, why: str) -> None:
        self.recorder.skipped(step, why)
        self.lineage.step_not_run(step, "cancelled", why)
        self.results[step.name].error = why
        self._done(step, "cancelled", {}, attempts=0)

    def _done(self, step: Step, state: str, arts: dict[str, dict[str, Any]], attempts: int) -> None:
        res = self.results[step.name]
        res.state, res.attempts = state, attempts
        res.artifacts = {
            k: Artifact(v["digest"], v["uri"], v["type"], v.get("metadata") or {})
            for k, v in arts.items()
        }
        if state in ("succeeded", "cached"):
            self.outputs[step.name] = arts
        if res.fingerprint:  # the step has ended: its lease, if this run held one, goes back
            leases.release(self.recorder.sessions, self.run_id, res.fingerprint)
        self.display.update(step.name, state=state, message=res.error or "")
