"""The one Ray Train launcher every training kind (pretrain, sft, dpo) calls.

A training stage checks its inputs in its driver, then hands `fit` the per-worker loop and its
arguments. `fit` turns the step's resources into a `ScalingConfig` (elastic ranges included),
keeps Ray Train's storage under `ctx.checkpoint_dir` (the engine keeps that per fingerprint, so a
re-run resumes from the latest checkpoint), puts the controller's failures, restarts and resizes
into the run's events, and turns a failed fit into the worker's own user-facing error or one that
says what to do. `finished` reads an earlier attempt's result without starting workers, for a
step re-run after it failed while exporting.

The Ray imports happen when this module is imported: only training stages import it, inside
their `run`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

from cairn.errors import CairnError
from cairn.stage.context import Context
from cairn.stage.resources import Resources
from cairn.stage.spec import TrainerConfig

# Ray Train's experiment name under ctx.checkpoint_dir; fixed, because resuming needs the same
# RunConfig(name, storage_path) as the interrupted run.
RUN_NAME = "train"
# Seconds between Ray Train's looks for room to grow an elastic worker group (Ray's default: 60).
ELASTIC_CHECK_S = 30.0


def fit(
    ctx: Context,
    loop: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    config: TrainerConfig,
    *,
    explain: Callable[[Exception], Exception],
) -> ray.train.Result:
    """Run `loop` on the step's Ray Train workers with `loop_config` (plus `ctx`, a context the
    workers report through, and their share of the resources); with the same RunConfig as an
    earlier attempt, Ray Train hands the workers that attempt's latest checkpoint
    (`ray.train.get_checkpoint`). A failure raises the worker's own `CairnError` if one raised
    one, else `explain(error)`."""
    if not ray.is_initialized():
        raise RuntimeError(
            f"step '{ctx.step}' trains with Ray Train and needs a running Ray (the engine "
            "initialises it); call ray.init() first"
        )
    res = ctx.resources
    with ctx.for_workers() as worker_ctx:
        trainer = TorchTrainer(
            loop,
            train_loop_config={
                **loop_config,
                "ctx": worker_ctx,
                "cpus_per_worker": res.cpus_per_worker,
                "gpus_per_worker": res.gpus_per_worker,
            },
            scaling_config=scaling(res),
            run_config=run_config(
                ctx.checkpoint_dir, config.max_failures, config.keep_checkpoints, worker_ctx
            ),
        )
        try:
            return trainer.fit()
        except ray.train.TrainingFailedError as e:
            own = worker_error(e)
            raise (own if own is not None else explain(e)) from e


def finished(ctx: Context, done: Callable[[ray.train.Result], bool]) -> ray.train.Result | None:
    """The result an earlier attempt left under `ctx.checkpoint_dir`, if `done(result)` says it
    finished training: a step re-run after failing during export reads Ray Train's checkpoint
    index instead of starting a worker group (~15 s here) only to find there is nothing to do."""
    run_dir = Path(ctx.checkpoint_dir) / RUN_NAME
    if not run_dir.is_dir():
        return None
    try:
        result = ray.train.Result.from_path(str(run_dir))
    except RuntimeError:  # no checkpoint index: the earlier attempt saved no checkpoint
        return None
    if result.checkpoint is None:
        return None
    return result if done(result) else None


def scaling(res: Resources) -> ScalingConfig:
    """The Ray Train worker group a step's resources ask for.

    An elastic range becomes Ray Train's `num_workers=(min, max)`: the group starts with as many
    workers as fit (at least min), and every `CAIRN_ELASTIC_CHECK_S` seconds Ray Train looks
    whether more fit; growing restarts the group from the latest checkpoint (see pretrain's
    batch rule in loop.py).
    """
    per_worker: dict[str, float] = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker > 0:
        per_worker["GPU"] = res.gpus_per_worker
    if res.memory_gb:
        per_worker["memory"] = res.memory_gb * 2**30
    kwargs: dict[str, Any] = {"num_workers": res.num_workers}
    if res.min_workers is not None:  # Ray Train V2's elastic form (mypy sees V1's signature)
        kwargs["num_workers"] = (res.min_workers, res.num_workers)
        kwargs["elastic_resize_monitor_interval_s"] = float(
            os.environ.get("CAIRN_ELASTIC_CHECK_S", ELASTIC_CHECK_S)
        )
    return ScalingConfig(
        use_gpu=res.gpus_per_worker > 0,
        resources_per_worker=per_worker,
        accelerator_type=res.accelerator_type,
        **kwargs,
    )


class TrainEvents(ControllerCallback, WorkerGroupCallback):
    """Puts what Ray Train's controller does into the run's event log: each worker group started
    (size, pids, nodes), each failure and the restart from the latest checkpoint, each resize.

    It runs inside Ray Train's controller actor and reports through the (picklable) step context.
    """

    def __init__(self, ctx: Any, max_failures: int) -> None:
        self.ctx, self.max_failures = ctx, max_failures
        self.failures = 0
        self._last: Any = None

    def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
        if current_state is self._last:
            return
        self._last = current_state
        name = type(current_state).__name__
        if name == "RestartingState":
            self.failures += 1
            error = _first_line(current_state.training_failed_error)
            budget = "unlimited" if self.max_failures < 0 else str(self.max_failures)
            self.ctx.event(
                "worker_failed",
                f"training worker group failed ({error}); restarting from the latest "
                f"checkpoint (restart {self.failures} of {budget})",
                error=error,
                restart=self.failures,
            )
        elif name == "ResizingState":
            n = current_state.scaling_decision.num_workers
            self.ctx.event(
                "workers_resized",
                f"more workers fit now: restarting the group with {n} from the latest checkpoint",
                num_workers=n,
            )

    def after_worker_group_start(self, worker_group: Any) -> None:
        workers = [
            {"rank": i, "pid": w.metadata.pid, "node": w.metadata.node_id}
            for i, w in enumerate(worker_group.get_workers())
        ]
        where = ", ".join(f"rank {w['rank']} pid {w['pid']}" for w in workers)
        self.ctx.event(
            "workers_started",
            f"{len(workers)} training worker(s) started: {where}",
            workers=workers,
        )
        self.ctx.flush()


def _first_line(error: Any) -> str:
    """A one-line account of a training failure: which ranks failed, with what."""
    failures = getattr(error, "worker_failures", None) or {}
    if failures:
        parts = []
        for rank, cause in sorted(failures.items()):
            lines = str(cause).strip().splitlines()
            parts.append(f"rank {rank}: {type(cause).__name__}: {lines[0] if lines else ''}")
        return "; ".join(parts)[:300]
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def worker_error(error: Exception) -> CairnError | None:
    """The user-facing error a worker raised, if one did (RayTaskError wraps it)."""
    for failure in (getattr(error, "worker_failures", None) or {}).values():
        cause = getattr(failure, "cause", failure)
        if isinstance(cause, CairnError):
            return cause
    return None


def run_config(
    checkpoint_dir: Any, max_failures: int, keep_checkpoints: int | None, ctx: Any = None
) -> RunConfig:
    """The RunConfig of a step's training: under its checkpoint dir, so a re-run resumes; with
    `ctx`, the controller's failures, restarts and resizes go to the run's events."""
    # A controller callback (Ray Train's DeveloperAPI), which RunConfig's annotation predates.
    callbacks: list[Any] | None = [TrainEvents(ctx, max_failures)] if ctx is not None else None
    return RunConfig(
        name=RUN_NAME,
        storage_path=str(checkpoint_dir),
        failure_config=FailureConfig(max_failures=max_failures),
        checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
        callbacks=callbacks,
    )
