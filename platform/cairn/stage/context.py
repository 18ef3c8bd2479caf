"""The `ctx` a stage receives: everything a running stage may use, and nothing else.

Stage code writes its files under `ctx.output_path(name)`, reports metrics, progress, log lines,
events and compute usage through `ctx`, asks it whether the run was cancelled, and, where it
judges a model by its past (release, evaluate's gate), asks it for the ancestry of its inputs.
It never touches run state, the database or MLflow: only the engine does, behind this protocol
(`cairn.engine.context.StepContext`), so the same stage function runs inline in a unit test
(`cairn.testing.local_context`), in a Ray task, or as the driver of a Ray Train job.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from cairn.stage.artifacts import InputArtifact
from cairn.stage.lineage import Ancestry
from cairn.stage.resources import Resources


class Context(Protocol):
    """What a running stage may use."""

    run_id: str
    step: str
    resources: Resources
    checkpoint_dir: Path
    scratch_dir: Path
    # The run's workflow: {name, path, digest, git, text}; empty when a stage runs by hand.
    workflow: dict[str, Any]
    # For kinds with reads_compute: {ancestor digest: {run_id, step, kind, attempts, usage}}.
    compute: dict[str, Any]

    def output_path(self, name: str) -> Path:
        """The directory the stage writes output `name` into (created)."""
        ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def progress(self, done: float, total: float | None = None, message: str = "") -> None: ...
    def log(self, message: str) -> None: ...

    def event(self, type: str, message: str, **data: Any) -> None:
        """An entry for the run's event log (the audit trail), e.g. a worker lost and restarted."""
        ...

    def usage(self, record: dict[str, Any]) -> None:
        """A worker's compute usage so far (`cairn.stage.usage.Meter.snapshot`)."""
        ...

    def cancelled(self) -> bool: ...
    def check_cancelled(self) -> None: ...

    def flush(self, wait: bool = False) -> None:
        """Send what is buffered now; with `wait`, return only once the engine has it (a
        worker about to exit calls this, or its last records would die with it)."""
        ...

    def for_workers(self) -> AbstractContextManager[Context]:
        """A context that other processes (Ray Train workers, on any node) can be handed and
        report through, valid while the `with` block lasts."""
        ...

    def ancestry(self, *artifacts: InputArtifact, verify_sources: bool = True) -> Ancestry:
        """Every artifact these inputs descend from, back to the raw sources, read from their
        sealed manifests. `verify_sources` re-digests each raw source where it lies (a source
        that changed since it was used is an error); without it, sources are taken as recorded."""
        ...


Inputs = dict[str, "InputArtifact | list[InputArtifact]"]
Outputs = dict[str, dict[str, Any]]
RunFn = Callable[[Any, Inputs, Context], Outputs]
