"""What every Ray Train stage kind (pretrain, sft, dpo) shares: relaying worker reports to `ctx`,
turning a step's resources into a `ScalingConfig`, and surfacing a worker's own error.

Workers get `ctx` pickled into another process. That works when its reporter is a
`RayReporterHandle` (what the engine's Ray executor passes), but an in-process reporter such as
`LocalReporter` (inline executor, `local_context` in tests) cannot be pickled, and a copy would
not reach the caller anyway. For those, `worker_context` stands a small Ray actor in for the
reporter while training runs and a thread relays its records, and the caller's cancel flag,
between the two.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

from cairn.context import RayReporterHandle, ReporterHub, StepContext
from cairn.errors import CairnError
from cairn.stages.base import Resources

RELAY_INTERVAL_S = 0.5
# Ray Train's experiment name under ctx.checkpoint_dir; fixed, because resuming needs the same
# RunConfig(name, storage_path) as the interrupted run.
RUN_NAME = "train"


@contextmanager
def worker_context(ctx: Any) -> Iterator[Any]:
    """Yield a context that can be shipped to Ray Train workers and reports into `ctx`."""
    if not isinstance(ctx, StepContext) or isinstance(ctx.reporter, RayReporterHandle):
        yield ctx
        return
    actor: Any = ray.remote(num_cpus=0)(ReporterHub).remote()
    remote = RayReporterHandle(actor, "relay")
    remote_ctx = dataclasses.replace(ctx, reporter=remote, _buffer=[])
    done = threading.Event()

    def relay() -> None:
        records = remote.drain()
        if records:
            ctx.reporter.push(records)
        if ctx.reporter.is_cancelled():
            remote.cancel()

    def loop() -> None:
        while not done.wait(RELAY_INTERVAL_S):
            relay()

    thread = threading.Thread(target=loop, name="cairn-raytrain-relay", daemon=True)
    thread.start()
    try:
        yield remote_ctx
    finally:
        done.set()
        thread.join()
        relay()  # whatever the workers flushed last
        ray.kill(actor)


def scaling(res: Resources) -> ScalingConfig:
    """The Ray Train worker group a step's resources ask for."""
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker > 0:
        per_worker["GPU"] = res.gpus_per_worker
    if res.memory_gb:
        per_worker["memory"] = res.memory_gb * 2**30
    return ScalingConfig(
        num_workers=res.num_workers,
        use_gpu=res.gpus_per_worker > 0,
        resources_per_worker=per_worker,
        accelerator_type=res.accelerator_type,
    )


def worker_error(error: Exception) -> CairnError | None:
    """The user-facing error a worker raised, if one did (RayTaskError wraps it)."""
    for failure in (getattr(error, "worker_failures", None) or {}).values():
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, CairnError):
            return cause
    return None


def run_config(checkpoint_dir: Any, max_failures: int, keep_checkpoints: int | None) -> RunConfig:
    """The RunConfig of a step's training: under its checkpoint dir, so a re-run resumes."""
    return RunConfig(
        name=RUN_NAME,
        storage_path=str(checkpoint_dir),
        failure_config=FailureConfig(max_failures=max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
    )
