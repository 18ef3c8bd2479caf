"""The background tracker: another tracker's calls on one thread, off the engine's critical path,
and not even begun until something needs them.

MLflow mirrors Cairn's state rather than holding it, so a step need not wait for it: each call
costs ~7 ms on MLflow's SQLite store, ~60 ms a step. Importing MLflow and opening its store costs
seconds, which a run whose steps are all cache hits would spend on nothing else; so calls are
held, in order, until `start()` (the engine calls it when a step is about to execute) or
`flush()`. A run that never started the tracker can `take_held()` its calls, which are plain data
(`Call`), and have another process replay them (`cairn.engine.handoff`), written as JSON
(`dump_calls`/`load_calls`): a file in a run's folder is never unpickled.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cairn.tracking import DatasetRef, MetricPoint, Tracker, TrackingError


@dataclass(frozen=True)
class Call:
    """One tracker call as data: `method(*args)`; `returns` is the placeholder its result (a run
    or model id) stands behind. A first argument that is a placeholder is resolved when the call
    runs (every method but `start_run` takes the run it acts on first)."""

    method: str
    args: tuple[Any, ...]
    returns: str | None = None


class BackgroundTracker:
    """Runs a tracker's calls on one thread, in order (see the module docstring).

    `make` builds the tracker, on that thread, when the first call runs. Run ids come back at
    once as placeholders, resolved on the thread; `on_id(placeholder, real_id)` is called there
    as each real id arrives. `flush()` waits for everything and raises the first failure.
    `portable`: the tracker `make` builds can be built again in another process (one from the
    deployment's settings, not an object of this one), so held calls may be replayed there.
    """

    def __init__(
        self, make: Callable[[], Tracker], on_id: Any = None, *, portable: bool = False
    ) -> None:
        self.make = make
        self.on_id = on_id
        self.portable = portable
        self.inner: Tracker | None = None
        self._ids: dict[str, str] = {}
        self._errors: list[str] = []
        self._broken: str | None = None
        self._queue: queue.Queue[Call] = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- the thread --------------------------------------------------------------------------
    def start(self) -> None:
        """Begin running calls (those held so far first); idempotent."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="cairn-tracker", daemon=True)
            self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def take_held(self) -> list[Call] | None:
        """The calls held so far, taken away (None once started: they are being run here)."""
        if self.started:
            return None
        held = []
        while True:
            try:
                held.append(self._queue.get_nowait())
            except queue.Empty:
                return held
            self._queue.task_done()

    def replay(self, calls: list[Call]) -> None:
        """Run calls another process held (`take_held`), then start."""
        for call in calls:
            self._queue.put(call)
        self.start()

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            try:
                self._run(call)
            except Exception as e:  # kept, and raised by flush(): never lost
                self._errors.append(f"{type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    def _run(self, call: Call) -> None:
        if self.inner is None:
            if self._broken:  # said once; every later call fails the same way, at once
                raise TrackingError(self._broken)
            try:
                self.inner = self.make()
            except Exception as e:
                self._broken = f"the tracker could not start: {type(e).__name__}: {e}"
                raise
        args = call.args
        if call.method != "start_run":
            args = (self.real_id(args[0]), *args[1:])
        result = getattr(self.inner, call.method)(*args)
        if call.returns is not None:
            self._ids[call.returns] = result
            if self.on_id:
                self.on_id(call.returns, result)

    def _put(self, method: str, *args: Any) -> None:
        self._queue.put(Call(method, args))

    def _new_id(self, method: str, *args: Any) -> str:
        placeholder = f"pending:{uuid.uuid4().hex}"
        self._queue.put(Call(method, args, placeholder))
        return placeholder

    def real_id(self, rid: str) -> str:
        """The real id behind a placeholder (KeyError: its creation failed or has not run)."""
        return self._ids[rid] if rid.startswith("pending:") else rid

    def flush(self) -> None:
        self.start()
        self._queue.join()
        if self._errors:
            errors, self._errors = self._errors, []
            raise TrackingError(
                f"{len(errors)} tracking call(s) failed; first: {errors[0]}. Check "
                "MLFLOW_TRACKING_URI (the run's own state in Cairn's database is complete)"
            )

    # -- the Tracker protocol, queued --------------------------------------------------------
    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id("start_run", run_id, workflow, params, tags)

    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id("start_step", parent, run_id, step, params, tags)

    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        self._put("log_metrics", mlflow_run_id, list(points))

    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None:
        self._put("log_datasets", mlflow_run_id, list(datasets))

    def log_model_inputs(self, mlflow_run_id: str, models: list[DatasetRef]) -> None:
        self._put("log_model_inputs", mlflow_run_id, list(models))

    def log_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        return self._new_id("log_model", mlflow_run_id, name, local_dir, tags, params)

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        self._put("log_model_metrics", mlflow_run_id, model_digest, dict(metrics))

    def register_model(
        self,
        mlflow_run_id: str,
        name: str,
        local_dir: str,
        tags: dict[str, str],
        params: dict[str, Any],
    ) -> str:
        return self._new_id("register_model", mlflow_run_id, name, local_dir, tags, params)

    def link_cached(self, mlflow_run_id: str, fingerprint: str, digests: dict[str, str]) -> None:
        self._put("link_cached", mlflow_run_id, fingerprint, dict(digests))

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self._put("set_tags", mlflow_run_id, dict(tags))

    def end(self, mlflow_run_id: str, status: str) -> None:
        self._put("end", mlflow_run_id, status)


# The dataclasses a call's arguments may hold; a journal names them and holds nothing else.
_ARGS = {"DatasetRef": DatasetRef, "MetricPoint": MetricPoint}


def dump_calls(calls: list[Call]) -> str:
    """Held calls as JSON (the handoff journal)."""

    def encode(v: Any) -> Any:
        for name, cls in _ARGS.items():
            if isinstance(v, cls):
                return {"__arg__": name, **v.__dict__}
        raise TypeError(f"a tracker call holds {type(v).__name__}, which a journal cannot")

    return json.dumps(
        [{"method": c.method, "args": list(c.args), "returns": c.returns} for c in calls],
        default=encode,
    )


def load_calls(text: str) -> list[Call]:
    """`dump_calls`'s calls again."""

    def decode(d: dict[str, Any]) -> Any:
        name = d.pop("__arg__", None)
        return _ARGS[name](**d) if name is not None else d

    return [
        Call(c["method"], tuple(c["args"]), c["returns"])
        for c in json.loads(text, object_hook=decode)
    ]
