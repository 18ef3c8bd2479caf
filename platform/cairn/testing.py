"""The fakes Cairn ships for tests of the engine and of stages, beside the real parts they stand in
for (httpx ships `MockTransport` the same way):

| fake | stands in for |
|---|---|
| `InlineExecutor` | the Ray executor: steps run in threads of this process |
| `MemoryTracker` | the MLflow tracker: what was logged, in dicts to assert on |
| `local_context(root)` | the engine's `ctx`: run a stage function by hand, then read its reports |
| `registered(*specs)` | a kind that exists for one `with` block only |

    from cairn import Client, Settings
    from cairn.testing import InlineExecutor, MemoryTracker

    client = Client(Settings.from_env(tmp), executor=InlineExecutor(), tracker=MemoryTracker())

Integration tests use the real Ray, MLflow, SQLite and PostgreSQL instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cairn.engine.backends.inline import InlineExecutor
from cairn.engine.context import LocalReporter, StepContext
from cairn.stage import Resources, StageSpec, register, unregister
from cairn.tracking.memory import MemoryRun, MemoryTracker

__all__ = [
    "InlineExecutor",
    "LocalReporter",
    "MemoryRun",
    "MemoryTracker",
    "StepContext",
    "local_context",
    "registered",
]


def local_context(
    root: Path, step: str = "step", resources: Resources | None = None, run_id: str = "local"
) -> StepContext:
    """A context backed by a `LocalReporter` under `root`: for running a stage by hand or in tests.

    Read what the stage reported with `ctx.reporter.drain()` after `ctx.flush()`.
    """
    root = Path(root)
    for sub in ("outputs", "checkpoints", "scratch"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return StepContext(
        run_id=run_id,
        step=step,
        resources=resources or Resources(),
        outputs_root=root / "outputs",
        checkpoint_dir=root / "checkpoints",
        scratch_dir=root / "scratch",
        reporter=LocalReporter(),
    )


@contextmanager
def registered(*specs: StageSpec) -> Iterator[None]:
    """Register `specs` for the `with` block (kinds a test defines for itself)."""
    for spec in specs:
        register(spec)
    try:
        yield
    finally:
        for spec in specs:
            unregister(spec.kind)
