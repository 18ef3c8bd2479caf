"""The engine: runs, scheduling, recording, MLflow mirroring, fingerprints, cluster fit, jobs.

| module | holds |
|---|---|
| `runs.py` | `Engine`: creates, runs, resumes and cancels runs; driver liveness |
| `scheduler.py` | one run's loop: ready steps, cache hits, polling, outcomes |
| `recorder.py` | Cairn's database rows, the event log and the step logs of a run |
| `mirror.py` | the same run in MLflow |
| `handoff.py` | the MLflow mirror of an all-cached run, written after it by a process of its own |
| `fingerprint.py` | a step's cache key |
| `cache.py` | a step's cache hit: intact artifacts of its fingerprint that its stage accepts |
| `attempt.py` | what runs on the worker: the stage, then sealing its outputs |
| `context.py` | the `ctx` stages get, and the reporter channel behind it |
| `backends/` | where attempts run: Ray, or threads (unit tests) |
| `cluster.py` | node types, steps that can never fit, nodes joining and leaving |
| `jobs.py` | `cairn submit` through the Ray Jobs API |
| `views.py` | run status and run lists for the public API |
| `progress.py` | the display seam the CLI plugs its live table into |
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cairn.engine.runs import Engine

__all__ = ["Engine"]


def __getattr__(name: str) -> object:
    # Imported on first use, not with the package: a Ray worker imports `cairn.engine.attempt`
    # (and the reporter hub, `cairn.engine.context`) for every step, and would otherwise pay for
    # the driver's side (SQLAlchemy, the scheduler, MLflow mirroring) in each of its processes.
    if name == "Engine":
        from cairn.engine.runs import Engine

        return Engine
    raise AttributeError(f"module 'cairn.engine' has no attribute {name!r}")
