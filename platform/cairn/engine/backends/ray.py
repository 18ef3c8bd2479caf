"""The Ray executor: each step attempt is a Ray task placed by its resources."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from cairn.engine.attempt import StepPayload, execute_step
from cairn.engine.backends import TRAIN_ENV, placement
from cairn.engine.cluster import NodeWatch, infeasible, node_types
from cairn.engine.context import RayReporterHandle, Reporter, ReporterHub
from cairn.errors import CairnError
from cairn.stage import Launcher, Resources

# How long the cluster's node types are trusted before being read again.
TYPES_TTL_S = 30.0


def own_error(error: BaseException) -> BaseException:
    """The exception a stage raised, from under Ray's wrappers.

    A step's error can arrive wrapped more than once: a Ray Data or Ray Train task inside the
    step raises it, the step's own task re-raises Ray's `RayTaskError`, and that reaches the
    engine as another one. Each wrapper's text is a traceback with the message on its last line
    (and as_instanceof_cause()'s "RayTaskError(StageError)" keeps that text), so a user would
    read `ray::execute_step() (pid=…)` instead of `file.jsonl:3: not valid JSON …; fix …`.
    Returns the first `CairnError` found (the message written for the user), else the innermost
    cause.
    """
    import ray

    seen: set[int] = set()
    current: BaseException | None = error
    innermost = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        innermost = current
        if isinstance(current, ray.exceptions.RayError):
            cause = getattr(current, "cause", None)
            current = cause if isinstance(cause, BaseException) else current.__cause__
        elif isinstance(current, CairnError):
            return current
        else:
            current = current.__cause__
    return innermost


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

    def submit(self, payload: StepPayload, launcher: Launcher, reporter: Reporter) -> Any:
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
            # The user reads the stage's own exception; Ray's wrapper, whose text is the
            # worker's traceback, stays chained to it for the step's log.
            own = own_error(e)
            raise own from (e if own is not e else None)

    def cancel(self, handle: Any) -> None:
        import ray

        ray.cancel(handle, force=False, recursive=True)

    def check(self, res: Resources, launcher: Launcher, step: str) -> str | None:
        """Why the step can never be scheduled here (see cairn.engine.cluster), or None."""
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
