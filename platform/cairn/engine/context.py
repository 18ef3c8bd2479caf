"""The engine's `ctx` (`StepContext`, the implementation of `cairn.stage.Context`), and the
reporter channel that carries a stage's reports to the engine.

A stage runs wherever the executor puts it (inline, a Ray task, a Ray Train worker on another
node). It reports metrics, progress and log lines into a `Reporter`; the engine drains the
reporter and is the only one that writes them to the database, the step log and MLflow. Records
are buffered and sent in batches so that a training loop never pays a round trip per scalar.

An in-process reporter (`LocalReporter`: the inline executor, `cairn.testing.local_context`)
cannot be pickled to other processes, and a copy would not reach the caller anyway. For those,
`StepContext.for_workers` stands a small Ray actor in for the reporter while workers run and a
thread relays its records, and the caller's cancel flag, between the two.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cairn.errors import StepCancelled
from cairn.stage import Ancestry, InputArtifact, Resources

RELAY_INTERVAL_S = 0.5


class Reporter(Protocol):
    """A channel from a running stage to the engine."""

    def push(self, records: list[dict[str, Any]]) -> None: ...
    def drain(self) -> list[dict[str, Any]]: ...
    def cancel(self) -> None: ...
    def is_cancelled(self) -> bool: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class LocalReporter:
    """In-process reporter, for the inline executor and unit tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        self._cancelled = False

    def push(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._records.extend(records)

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._records = self._records, []
        return out

    def cancel(self) -> None:
        self._cancelled = True

    def is_cancelled(self) -> bool:
        return self._cancelled

    def sync(self) -> None:
        pass  # pushes are in place already

    def close(self) -> None:
        pass


class ReporterHub:
    """Many steps' channels in one place: the Ray executor runs one of these as an actor for all
    its steps (an actor per step would cost a worker process, and ~0.7 s, each)."""

    def __init__(self) -> None:
        self._channels: dict[str, LocalReporter] = {}

    def _channel(self, key: str) -> LocalReporter:
        return self._channels.setdefault(key, LocalReporter())

    def push(self, key: str, records: list[dict[str, Any]]) -> None:
        self._channel(key).push(records)

    def drain(self, key: str) -> list[dict[str, Any]]:
        return self._channel(key).drain()

    def cancel(self, key: str) -> None:
        self._channel(key).cancel()

    def is_cancelled(self, key: str) -> bool:
        return self._channel(key).is_cancelled()

    def close(self, key: str) -> None:
        self._channels.pop(key, None)


class RayReporterHandle:
    """One channel of a `ReporterHub` actor, with the `Reporter` methods.

    Picklable, so a stage can hand it (inside its ctx) to Ray Train workers on other nodes.
    Calls from one process to the actor run in order, so a blocking call after `push` (such as
    `is_cancelled`) returns only once the pushed records are in.
    """

    def __init__(self, actor: Any, key: str) -> None:
        self.actor = actor
        self.key = key

    def push(self, records: list[dict[str, Any]]) -> None:
        self.actor.push.remote(self.key, records)  # fire and forget: never blocks training

    def drain(self) -> list[dict[str, Any]]:
        import ray

        return ray.get(self.actor.drain.remote(self.key))

    def cancel(self) -> None:
        import ray

        ray.get(self.actor.cancel.remote(self.key))

    def is_cancelled(self) -> bool:
        import ray

        return ray.get(self.actor.is_cancelled.remote(self.key))

    def sync(self) -> None:
        """Return once every record pushed before it is in (calls run in order)."""
        self.is_cancelled()

    def close(self) -> None:
        self.actor.close.remote(self.key)


@dataclass
class StepContext:
    """The engine's implementation of `cairn.stage.Context`."""

    run_id: str
    step: str
    resources: Resources
    outputs_root: Path
    checkpoint_dir: Path
    scratch_dir: Path
    reporter: Any
    workflow: dict[str, Any] = field(default_factory=dict)
    compute: dict[str, Any] = field(default_factory=dict)
    licenses: dict[str, str] = field(default_factory=dict)  # source digest → stated licence
    flush_interval_s: float = 1.0
    _buffer: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _last_flush: float = field(default=0.0, repr=False)
    _last_cancel_check: float = field(default=0.0, repr=False)
    _cancelled: bool = field(default=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        # Shipped to Ray Train workers: they start with an empty buffer of their own.
        state = self.__dict__.copy()
        state["_buffer"] = []
        return state

    def output_path(self, name: str) -> Path:
        path = self.outputs_root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._emit({"type": "metrics", "values": values, "step": step, "ts": _now_ms()})

    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        self._emit(
            {"type": "progress", "done": done, "total": total, "message": message, "ts": _now_ms()}
        )

    def log(self, message: str) -> None:
        self._emit({"type": "log", "message": message, "ts": _now_ms()}, urgent=True)

    def event(self, type: str, message: str, **data: Any) -> None:
        """An entry for the run's event log (the audit trail), e.g. a worker lost and restarted."""
        record = {"type": "event", "event": type, "message": message, "data": data}
        self._emit({**record, "ts": _now_ms()}, urgent=True)

    def usage(self, record: dict[str, Any]) -> None:
        """A worker's compute usage so far (`cairn.stage.usage.Meter.snapshot`)."""
        self._emit({"type": "usage", "usage": record, "ts": _now_ms()})

    def cancelled(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 1.0:
            self._last_cancel_check = now
            self._cancelled = bool(self.reporter.is_cancelled())
        return self._cancelled

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise StepCancelled(f"step '{self.step}' of run {self.run_id} was cancelled")

    def flush(self, wait: bool = False) -> None:
        if self._buffer:
            records, self._buffer = self._buffer, []
            self.reporter.push(records)
        self._last_flush = time.monotonic()
        if wait:
            self.reporter.sync()

    @contextmanager
    def for_workers(self) -> Iterator[StepContext]:
        """A context Ray Train workers on any node can report through (see the docstring)."""
        if isinstance(self.reporter, RayReporterHandle):
            yield self
            return
        import ray

        actor: Any = ray.remote(num_cpus=0)(ReporterHub).remote()
        remote = RayReporterHandle(actor, "relay")
        remote_ctx = dataclasses.replace(self, reporter=remote, _buffer=[])
        done = threading.Event()

        def relay() -> None:
            records = remote.drain()
            if records:
                self.reporter.push(records)
            if self.reporter.is_cancelled():
                remote.cancel()

        def loop() -> None:
            while not done.wait(RELAY_INTERVAL_S):
                relay()

        thread = threading.Thread(target=loop, name="cairn-worker-relay", daemon=True)
        thread.start()
        try:
            yield remote_ctx
        finally:
            done.set()
            thread.join()
            relay()  # whatever the workers flushed last
            ray.kill(actor)

    def ancestry(self, *artifacts: InputArtifact, verify_sources: bool = True) -> Ancestry:
        from cairn.artifacts.ancestry import walk

        return walk(
            [(a.uri or str(a.path), a.digest) for a in artifacts],
            verify_sources=verify_sources,
            licenses=self.licenses,
        )

    def _emit(self, record: dict[str, Any], urgent: bool = False) -> None:
        self._buffer.append(record)
        if urgent or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()


def _now_ms() -> int:
    return int(time.time() * 1000)
