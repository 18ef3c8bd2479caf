"""Lets Ray Train workers report through a `ctx` whose reporter lives only in this process.

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

from cairn.context import RayReporterHandle, ReporterHub, StepContext

RELAY_INTERVAL_S = 0.5


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

    thread = threading.Thread(target=loop, name="cairn-pretrain-relay", daemon=True)
    thread.start()
    try:
        yield remote_ctx
    finally:
        done.set()
        thread.join()
        relay()  # whatever the workers flushed last
        ray.kill(actor)
