"""The inline executor: steps run in threads of this process, no Ray. For unit tests of the engine
(exported as `cairn.testing.InlineExecutor`); training stages, which start Ray Train, need Ray."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any

from cairn.engine.attempt import StepPayload, execute_step
from cairn.engine.context import LocalReporter, Reporter
from cairn.stage import Launcher, Resources


class InlineExecutor:
    """Runs steps in threads of this process: no Ray, for unit tests of the engine."""

    def __init__(self, max_workers: int = 2) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers)

    def submit(self, payload: StepPayload, launcher: Launcher, reporter: Reporter) -> Future:
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

    def check(self, res: Resources, launcher: Launcher, step: str) -> str | None:
        return None  # threads of this process: any step fits

    def cluster_changes(self, force: bool = False) -> list[dict[str, Any]]:
        return []

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
