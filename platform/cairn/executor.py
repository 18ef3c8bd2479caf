"""The executor seam: where step attempts run. Ray for real; a thread pool for unit tests.

The engine submits `execute_step(payload, reporter)` with the step's placement and polls for
completion. Retries are the engine's business (recorded as attempts), so Ray's own task retries
are off.
"""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any, Protocol

from cairn.cluster import NodeWatch, infeasible, node_types
from cairn.context import LocalReporter, RayReporterHandle, Reporter, ReporterHub
from cairn.runner import StepPayload, execute_step
from cairn.stages.base import Resources

# Ray Train V2 polls its workers every 2 s by default, so each report() blocks that long.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
# How long the cluster's node types are trusted before being read again.
TYPES_TTL_S = 30.0


class Executor(Protocol):
    def submit(self, payload: StepPayload, launcher: str, reporter: Reporter) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def result(self, handle: Any) -> dict[str, Any]: ...
    def cancel(self, handle: Any) -> None: ...
    def reporter(self) -> Reporter: ...
    def check(self, res: Resources, launcher: str, step: str) -> str | None: ...
    def cluster_changes(self, force: bool = False) -> list[dict[str, Any]]: ...
    def shutdown(self) -> None: ...


class InlineExecutor:
    """Runs steps in threads of this process: no Ray, for unit tests of the engine."""

    def __init__(self, max_workers: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers)

    def submit(self, payload: StepPayload, launcher: str, reporter: Reporter) -> Future:
        return self.pool.submit(execute_step, payload, reporter)

    def wait(self, handles: list[Future], timeout: float) -> list[Future]:
        done, _ = futures_wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def result(self, handle: Future) -> dict[str, Any]:
        return handle.result()

    def cancel(self, handle: Future) -> None:
        handle.cancel()

    def reporter(self) -> Reporter:
        return LocalReporter()

    def check(self, res: Resources, launcher: str, step: str) -> str | None:
        return None  # threads of this process: any step fits

    def cluster_changes(self, force: bool = False) -> list[dict[str, Any]]:
        return []

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class RayExecutor:
    """Runs each step attempt as a Ray task placed by its resources.

    `address=None` starts Ray in this process (the embedded default); otherwise connects to a
    cluster (`auto` inside a Ray job). Ray is initialised lazily, so a run whose steps are all
    cached never pays Ray's start-up.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._remote: Any = None
        self._hub: Any = None
        self._watch = NodeWatch()
        self._types: tuple[Any, str] | None = None
        self._types_at = 0.0

    def _start(self) -> None:
        if self._remote is not None:
            return
        for k, v in TRAIN_ENV.items():
            os.environ.setdefault(k, v)
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"log_to_driver": False}
            if self.address:
                kwargs["address"] = self.address
            else:
                # "local": a new instance, even when `ray start` left a cluster address on
                # this machine, which a bare ray.init() would connect to instead.
                kwargs.update(address="local", num_cpus=self.num_cpus, include_dashboard=False)
            # Workers inherit this process's environment (TRAIN_ENV above); a runtime_env here
            # would clash with the one a Ray job's driver already has.
            ray.init(**kwargs)
        self._remote = ray.remote(max_retries=0)(execute_step)
        self._hub = ray.remote(num_cpus=0)(ReporterHub).remote()

    def reporter(self) -> Reporter:
        self._start()
        return RayReporterHandle(self._hub, uuid.uuid4().hex)

    def submit(self, payload: StepPayload, launcher: str, reporter: Reporter) -> Any:
        self._start()
        opts = placement(Resources.model_validate(payload.resources), launcher)
        if launcher == "driver" and self._cpu_less_node():
            # Curate's Ray Data tasks run on its driver's node (its scratch files are there):
            # on a cluster with a CPU-less head (clusters/), the driver must hold a CPU so it
            # lands on, or makes the autoscaler add, a node where those tasks can run.
            opts["num_cpus"] = 1
        return self._remote.options(**opts).remote(payload, reporter)

    def _cpu_less_node(self) -> bool:
        import ray

        return any(n["Alive"] and not n["Resources"].get("CPU") for n in ray.nodes())

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        import ray

        done, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if done:  # collect every other finished one too, without waiting
            more, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
            done = list({h.hex(): h for h in [*done, *more]}.values())
        return done

    def result(self, handle: Any) -> dict[str, Any]:
        import ray

        try:
            return ray.get(handle)
        except ray.exceptions.RayTaskError as e:
            # Re-raise the stage's own exception (StageError etc.) rather than Ray's wrapper.
            cause = e.as_instanceof_cause()
            raise cause from None

    def cancel(self, handle: Any) -> None:
        import ray

        ray.cancel(handle, force=False, recursive=True)

    def check(self, res: Resources, launcher: str, step: str) -> str | None:
        """Why the step can never be scheduled here (see cairn.cluster), or None."""
        self._start()
        if self._types is None or time.monotonic() - self._types_at > TYPES_TTL_S:
            import ray

            self._types = node_types(ray.get_runtime_context().gcs_address)
            self._types_at = time.monotonic()
        types, source = self._types
        if types is None:
            return None
        why = infeasible(res, launcher, types, step)
        return f"{why} [node types from {source}]" if why else None

    def cluster_changes(self, force: bool = False) -> list[dict[str, Any]]:
        return self._watch.changes(force) if self._remote is not None else []

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized() and not self.address:
            ray.shutdown()


def placement(res: Resources, launcher: str) -> dict[str, Any]:
    """Ray task options for a step's driver.

    A "trainer" stage's driver holds no CPU: its Ray Train workers ask for the step's resources,
    and a driver holding a CPU would starve them on a small machine. A "driver" stage (curate)
    likewise holds none: its Ray Data tasks take the CPUs, up to the step's resources.
    """
    if launcher in ("trainer", "driver"):
        return {"num_cpus": 0}
    opts: dict[str, Any] = {
        "num_cpus": res.cpus_per_worker * res.num_workers,
        "num_gpus": res.gpus_per_worker * res.num_workers,
    }
    if res.memory_gb:
        opts["memory"] = int(res.memory_gb * res.num_workers * 2**30)
    if res.accelerator_type:
        opts["accelerator_type"] = res.accelerator_type
    return opts
