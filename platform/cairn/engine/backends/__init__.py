"""The executor seam: where step attempts run. Ray for real (`ray.py`); threads of this process
for unit tests of the engine (`inline.py`, the shipped fake: `cairn.testing.InlineExecutor`).

The engine submits `execute_step(payload, reporter)` with the step's placement and polls for
completion. Retries are the engine's business (recorded as attempts), so Ray's own task retries
are off.
"""

from __future__ import annotations

from typing import Any, Protocol

from cairn.engine.attempt import StepPayload
from cairn.engine.context import Reporter
from cairn.stage import Launcher, Resources

# Ray Train V2 polls its workers every 2 s by default, so each report() blocks that long.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}


class Executor(Protocol):
    def submit(self, payload: StepPayload, launcher: Launcher, reporter: Reporter) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[Any]: ...
    def result(self, handle: Any) -> dict[str, Any]: ...
    def cancel(self, handle: Any) -> None: ...
    def reporter(self) -> Reporter: ...
    def check(self, res: Resources, launcher: Launcher, step: str) -> str | None: ...
    def cluster_changes(self, force: bool = False) -> list[dict[str, Any]]: ...
    def shutdown(self) -> None: ...


def placement(res: Resources, launcher: Launcher) -> dict[str, Any]:
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
