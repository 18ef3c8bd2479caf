"""The few things curate needs from Ray Data, in one place: settings, node pinning, errors.

Curate runs as a Ray task and uses the cluster's CPUs through Ray Data. Three rules hold here:
- **Order is kept** (`preserve_order`): rows reach the driver in source order whatever the
  scheduling, so the document kept by dedup and every count are the same run after run.
- **Local files are read on this node**: sources and scratch files live on the disk of the node
  that runs the step, so tasks that read them are pinned to it (`local://` for Parquet, the
  node-id label selector for the file scan). A source given as an fsspec URI could be read
  anywhere; pinning it too keeps one rule.
- **A stage error stays a stage error**: Ray wraps an exception raised in a worker; the driver
  unwraps it so the user reads "plays.jsonl:12: not valid JSON …", not a Ray traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from cairn.errors import StageError


def configure(max_cpus: float | None = None) -> None:
    """Ordered, quiet execution; `max_cpus` caps what curate takes from the cluster."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the step reports progress through its context instead
    ctx.print_on_execution_start = False
    # Per-operator reservations split a small cluster's CPUs between operators up front: on 2
    # CPUs the scan's tasks then ran one at a time (bench/curation.py: 2.5 s against 1.6 s).
    ctx.op_resource_reservation_enabled = False
    if max_cpus:
        ctx.execution_options.resource_limits = ctx.execution_options.resource_limits.copy(
            cpu=max_cpus
        )


def on_this_node() -> dict[str, Any]:
    """`map_batches` options that keep its tasks on the node running this step (Ray labels
    every node with its id)."""
    import ray

    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}


def read_local_parquet(path: Path, columns: list[str] | None = None) -> Any:
    import ray

    return ray.data.read_parquet(f"local://{path}", columns=columns)


def batches(ds: Any, batch_size: int | None = None) -> Iterator[pa.Table]:
    """Stream a dataset's rows to this process as Arrow tables, unwrapping stage errors."""
    with unwrapped():
        yield from ds.iter_batches(batch_size=batch_size, batch_format="pyarrow")


@contextmanager
def unwrapped() -> Iterator[None]:
    try:
        yield
    except StageError:
        raise
    except Exception as e:  # a worker's StageError arrives wrapped by Ray (and Ray Data)
        cause: BaseException | None = e
        while cause is not None:
            if isinstance(cause, StageError):
                raise StageError(str(cause).splitlines()[0] if str(cause) else "") from e
            cause = cause.__cause__ or getattr(cause, "cause", None)
        raise
