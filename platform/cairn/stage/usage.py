"""Compute accounting: what each worker of a step held and used, and what a step cost in total.

A cluster bills by what is *held*, so the headline numbers are allocations: worker-seconds (wall
time a worker process was alive), CPU-seconds and GPU-seconds (worker-seconds × the CPUs and GPUs
the step asked for per worker). Beside them, what was *used*: the process's own CPU time and its
peak resident memory (and peak CUDA memory on GPUs), so a step that holds 8 CPUs and uses one
shows it.

Each worker process runs a `Meter`; it reports a `usage` record through the step context now and
then (a worker killed by SIGKILL loses only what it used since its last report), keyed by
host:pid, so a restarted worker is a new row and its dead predecessor's row stays. The engine keeps
the latest record per key and stores `summarise(records)` on the step run.

The step's own process is metered too (`role: "driver"`). A "task" step's driver is its only
worker and holds the step's CPUs; a "trainer" step's driver holds none (its Ray Train workers hold
them); a "driver" step (curate) charges its Ray Data CPU cap to the driver's wall time, since Ray
Data's pooled task workers cannot be metered one step at a time.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import psutil

REPORT_EVERY_S = 10.0


class Meter:
    """Wall time, CPU time and peak memory of this process, from `start()` on.

    Peak memory is sampled every `interval` seconds by a daemon thread (psutil RSS), because
    `ru_maxrss` would count the peak of whatever a pooled Ray worker ran before this step.
    """

    def __init__(
        self, role: str, cpus: float, gpus: float, rank: int | None = None, interval: float = 0.5
    ) -> None:
        self.role, self.cpus, self.gpus, self.rank = role, cpus, gpus, rank
        self.key = f"{socket.gethostname()}:{os.getpid()}"
        self._proc = psutil.Process()
        self._interval = interval
        self._t0 = time.monotonic()
        self._cpu0 = self._cpu_time()
        self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._last_report = 0.0
        self._thread = threading.Thread(target=self._sample, name="cairn-meter", daemon=True)
        self._thread.start()

    def _cpu_time(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._peak = max(self._peak, self._proc.memory_info().rss)
            except psutil.Error:  # the process is exiting
                return

    def snapshot(self) -> dict[str, Any]:
        """The usage record so far (what `ctx.usage` sends)."""
        self._peak = max(self._peak, self._proc.memory_info().rss)
        rec: dict[str, Any] = {
            "worker": self.key,
            "role": self.role,
            "rank": self.rank,
            "node": node_id(),
            "wall_s": round(time.monotonic() - self._t0, 3),
            "cpu_time_s": round(self._cpu_time() - self._cpu0, 3),
            "cpus": self.cpus,
            "gpus": self.gpus,
            "peak_rss_bytes": int(self._peak),
        }
        gpu_peak = _cuda_peak()
        if gpu_peak is not None:
            rec["peak_gpu_bytes"] = gpu_peak
        return rec

    def due(self) -> bool:
        """Whether a periodic report is due (at most every REPORT_EVERY_S)."""
        now = time.monotonic()
        if now - self._last_report >= REPORT_EVERY_S:
            self._last_report = now
            return True
        return False

    def stop(self) -> dict[str, Any]:
        rec = self.snapshot()
        self._stop.set()
        return rec


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A step run's totals from its workers' latest usage records (see the module docstring)."""
    workers = sorted(records, key=lambda r: (r.get("role") != "driver", r.get("rank") or 0))
    worker_s = sum(r["wall_s"] for r in workers if r.get("cpus") or r.get("gpus"))
    return {
        "worker_seconds": round(worker_s, 3),
        "cpu_seconds": round(sum(r["wall_s"] * r.get("cpus", 0) for r in workers), 3),
        "gpu_seconds": round(sum(r["wall_s"] * r.get("gpus", 0) for r in workers), 3),
        "cpu_time_seconds": round(sum(r.get("cpu_time_s", 0.0) for r in workers), 3),
        "peak_rss_bytes": max((r.get("peak_rss_bytes", 0) for r in workers), default=0),
        "workers": workers,
    }


def add(totals: dict[str, float], usage: dict[str, Any] | None) -> dict[str, float]:
    """`totals` plus one step run's usage (for per-stage and per-run sums)."""
    for key in ("worker_seconds", "cpu_seconds", "gpu_seconds", "cpu_time_seconds"):
        totals[key] = round(totals.get(key, 0.0) + float((usage or {}).get(key, 0.0)), 3)
    return totals


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def node_id() -> str | None:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # outside Ray (inline executor, by-hand runs): no node id to give
        return None
    return None


def _cuda_peak() -> int | None:
    torch = sys.modules.get("torch")  # never import torch just to ask
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())
