"""The background tracker: another tracker's calls on one thread, off the engine's critical path."""

from __future__ import annotations

import uuid
from typing import Any

from cairn.tracking import DatasetRef, MetricPoint, Tracker, TrackingError


class BackgroundTracker:
    """Runs another tracker's calls on one thread, in order, off the engine's critical path.

    MLflow mirrors Cairn's state rather than holding it, so a step need not wait for it: each
    call costs ~7 ms on MLflow's SQLite store, ~60 ms a step. Run ids come back at once as
    placeholders, resolved on the worker thread; `on_id(placeholder, real_id)` is called there
    as each real id arrives. `flush()` waits for everything and raises the first failure.
    """

    def __init__(self, inner: Tracker, on_id: Any = None) -> None:
        import queue
        import threading

        self.inner = inner
        self.on_id = on_id
        self._ids: dict[str, str] = {}
        self._errors: list[str] = []
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="cairn-tracker", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            fn = self._queue.get()
            try:
                fn()
            except Exception as e:  # kept, and raised by flush(): never lost
                self._errors.append(f"{type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    def _new_id(self, make: Any) -> str:
        placeholder = f"pending:{uuid.uuid4().hex}"

        def create() -> None:
            real = make()
            self._ids[placeholder] = real
            if self.on_id:
                self.on_id(placeholder, real)

        self._queue.put(create)
        return placeholder

    def real_id(self, rid: str) -> str:
        return self._ids[rid] if rid.startswith("pending:") else rid

    def start_run(
        self, run_id: str, workflow: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id(lambda: self.inner.start_run(run_id, workflow, params, tags))

    def start_step(
        self, parent: str, run_id: str, step: str, params: dict[str, Any], tags: dict[str, str]
    ) -> str:
        return self._new_id(
            lambda: self.inner.start_step(self.real_id(parent), run_id, step, params, tags)
        )

    def log_metrics(self, mlflow_run_id: str, points: list[MetricPoint]) -> None:
        self._queue.put(lambda: self.inner.log_metrics(self.real_id(mlflow_run_id), list(points)))

    def log_datasets(self, mlflow_run_id: str, datasets: list[DatasetRef]) -> None:
        self._queue.put(lambda: self.inner.log_datasets(self.real_id(mlflow_run_id), datasets))

    def log_model(self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]) -> str:
        return self._new_id(
            lambda: self.inner.log_model(self.real_id(mlflow_run_id), name, local_dir, tags)
        )

    def log_model_metrics(
        self, mlflow_run_id: str, model_digest: str, metrics: dict[str, float]
    ) -> None:
        self._queue.put(
            lambda: self.inner.log_model_metrics(
                self.real_id(mlflow_run_id), model_digest, dict(metrics)
            )
        )

    def register_model(
        self, mlflow_run_id: str, name: str, local_dir: str, tags: dict[str, str]
    ) -> str:
        return self._new_id(
            lambda: self.inner.register_model(self.real_id(mlflow_run_id), name, local_dir, tags)
        )

    def set_tags(self, mlflow_run_id: str, tags: dict[str, str]) -> None:
        self._queue.put(lambda: self.inner.set_tags(self.real_id(mlflow_run_id), tags))

    def end(self, mlflow_run_id: str, status: str) -> None:
        self._queue.put(lambda: self.inner.end(self.real_id(mlflow_run_id), status))

    def flush(self) -> None:
        self._queue.join()
        if self._errors:
            errors, self._errors = self._errors, []
            raise TrackingError(
                f"{len(errors)} tracking call(s) failed; first: {errors[0]}. Check "
                "MLFLOW_TRACKING_URI (the run's own state in Cairn's database is complete)"
            )
