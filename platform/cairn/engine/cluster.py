"""What the engine knows about the Ray cluster under a run: which node types it can have (so a step
whose resources no node can ever hold fails at once, instead of waiting forever for a node that
will never come) and which nodes join and leave while the run goes (the run's events).

Autoscaling itself is Ray's: a step's resources become Ray resource requests — the Ray Train
worker group's placement group and its autoscaling request for a training step, the task's own
CPU/GPU/memory demand otherwise — which make the autoscaler add nodes; both end with the step,
and nodes left idle go after the cluster's idle timeout.

The node types come from, in order:
1. `CAIRN_CLUSTER_CONFIG`: a cluster-launcher YAML or a KubeRay RayCluster/RayJob manifest (the
   files in clusters/), for clusters whose autoscaler config the driver cannot see;
2. the autoscaler's own config, when its monitor runs on this machine (the cluster launcher's
   head, `ray start --autoscaling-config`, the fake multi-node cluster in the tests);
3. otherwise, when no autoscaler is running, the nodes that are alive now (a fixed cluster, and
   the embedded default: one node).
With an autoscaler whose config is unknown (KubeRay without CAIRN_CLUSTER_CONFIG) nothing is
checked, and the step waits for Ray as before.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.stage import Launcher, Resources

WATCH_INTERVAL_S = 1.0
# Resources Ray gives every node that say nothing about what a step can ask for.
IGNORED = ("object_store_memory",)


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_count: int


def worker_shape(res: Resources, launcher: Launcher) -> tuple[dict[str, float], int]:
    """The resources one worker asks for and how many must fit for the step to start.

    A "task" step is one Ray task holding all its workers' resources; a "trainer" step starts
    `min_workers` (elastic) or `num_workers` Ray Train workers; a "driver" step's Ray Data tasks
    take one CPU each, up to its cap.
    """
    if launcher == "driver":
        return {"CPU": 1.0}, 1
    n = 1 if launcher == "task" else (res.min_workers or res.num_workers)
    k = res.num_workers if launcher == "task" else 1
    shape = {"CPU": res.cpus_per_worker * k, "GPU": res.gpus_per_worker * k}
    if res.memory_gb:
        shape["memory"] = res.memory_gb * k * 2**30
    if res.accelerator_type:
        shape[f"accelerator_type:{res.accelerator_type}"] = 0.001
    return {key: v for key, v in shape.items() if v > 0}, n


def request_text(res: Resources, launcher: Launcher) -> str:
    """What the step asks of the cluster, for its step_started event: '2..4 × {CPU 1}'."""
    shape, _ = worker_shape(res, launcher)
    if launcher == "task":
        return _fmt(shape)
    if launcher == "driver":
        return f"up to {res.num_workers * res.cpus_per_worker:g} × {_fmt(shape)} (Ray Data tasks)"
    return f"{res.workers_text()} × {_fmt(shape)} (Ray Train workers)"


def infeasible(res: Resources, launcher: Launcher, types: list[NodeType], step: str) -> str | None:
    """Why `res` can never be scheduled on a cluster of `types`, or None if it can."""
    shape, need = worker_shape(res, launcher)
    if not shape:
        return None
    per_node = {t.name: _fits(shape, t.resources) for t in types}
    capacity = sum(per_node[t.name] * t.max_count for t in types)
    if capacity >= need:
        return None
    listing = "; ".join(f"{t.name} ×{t.max_count}: {_fmt(t.resources)}" for t in types)
    what = "its task" if launcher == "task" else "each worker"
    if not any(per_node.values()):
        return (
            f"step '{step}' can never be scheduled: {what} asks for {_fmt(shape)} and no node "
            f"type of this cluster has that ({listing}); fix: lower the step's resources "
            "(cpus_per_worker, gpus_per_worker, memory_gb, accelerator_type) or add a node type "
            "that holds them to the cluster definition (clusters/)"
        )
    return (
        f"step '{step}' can never be scheduled: it needs {need} worker(s) of {_fmt(shape)} "
        f"at once, and at most {capacity} fit on this cluster at its largest ({listing}); fix: "
        f"set resources.num_workers to at most {capacity} (or a range '{max(1, capacity)}.."
        f"{res.num_workers}' for pretrain), or raise the node types' max counts"
    )


def _fits(shape: dict[str, float], node: dict[str, float]) -> int:
    """How many workers of `shape` one node of resources `node` holds."""
    counts = []
    for key, need in shape.items():
        if key == "memory" and "memory" not in node:
            continue  # the autoscaler's config often leaves memory to be detected
        counts.append(math.floor(node.get(key, 0.0) / need + 1e-9))
    return min(counts) if counts else 1


def _fmt(resources: dict[str, float]) -> str:
    parts = []
    for key, v in resources.items():
        if key in IGNORED or key.startswith("node:"):
            continue
        if key == "memory":
            parts.append(f"memory {v / 2**30:.0f} GiB")
        elif key.startswith("accelerator_type:"):
            parts.append(key)
        else:
            parts.append(f"{key} {v:g}")
    return "{" + ", ".join(parts) + "}"


def node_types(gcs_address: str | None) -> tuple[list[NodeType] | None, str]:
    """The cluster's node types and where they came from; None when they cannot be known."""
    path = os.environ.get("CAIRN_CLUSTER_CONFIG")
    if path:
        return from_config_file(Path(path)), f"CAIRN_CLUSTER_CONFIG={path}"
    monitor = _monitor_config(gcs_address)
    if monitor is not None:
        return from_launcher_config(monitor[1]), f"the autoscaler's config {monitor[0]}"
    if _autoscaler_v2():
        return None, "an autoscaler whose node types are unknown (set CAIRN_CLUSTER_CONFIG)"
    return live_nodes(), "the nodes alive now (no autoscaler)"


def from_config_file(path: Path) -> list[NodeType]:
    import yaml

    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    for doc in docs:
        if doc.get("kind") in ("RayCluster", "RayJob"):
            return from_kuberay(doc)
        if "available_node_types" in doc:
            return from_launcher_config(doc)
    raise ValueError(
        f"{path}: neither a cluster-launcher config (available_node_types) nor a KubeRay "
        "RayCluster/RayJob; fix: point CAIRN_CLUSTER_CONFIG at one of the files in clusters/"
    )


def from_launcher_config(config: dict[str, Any]) -> list[NodeType]:
    head = config.get("head_node_type")
    types = []
    for name, t in (config.get("available_node_types") or {}).items():
        count = 1 if name == head else int(t.get("max_workers", config.get("max_workers", 0)))
        types.append(NodeType(name, {k: float(v) for k, v in t["resources"].items()}, count))
    return types


def from_kuberay(doc: dict[str, Any]) -> list[NodeType]:
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    # Ray's own KubeRay translation; it wants a namespace, which a manifest may leave to kubectl.
    metadata = {"namespace": "default", **doc.get("metadata", {})}
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    cr = {**doc, "metadata": metadata, "spec": spec}
    return from_launcher_config(_derive_autoscaling_config_from_ray_cr(cr))


def live_nodes() -> list[NodeType]:
    import ray

    return [NodeType(n["NodeID"][:12], dict(n["Resources"]), 1) for n in ray.nodes() if n["Alive"]]


def _monitor_config(gcs_address: str | None) -> tuple[str, dict[str, Any]] | None:
    """The --autoscaling-config of an autoscaler monitor on this machine serving `gcs_address`."""
    import psutil
    import yaml

    if not gcs_address:
        return None
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if not any("monitor.py" in c for c in cmd):
            continue
        if not any(c.endswith(gcs_address) for c in cmd if c.startswith("--gcs-address")):
            continue
        for c in cmd:
            if c.startswith("--autoscaling-config="):
                path = c.split("=", 1)[1]
                try:
                    return path, yaml.safe_load(Path(path).read_text())
                except OSError:
                    return None
    return None


def _autoscaler_v2() -> bool:
    try:
        from ray.autoscaler.v2.utils import is_autoscaler_v2

        return bool(is_autoscaler_v2())
    except Exception:  # an older/newer Ray without the flag: treat as no known autoscaler
        return False


class NodeWatch:
    """Nodes joining and leaving the cluster, as the run's `node_added`/`node_removed` events."""

    def __init__(self) -> None:
        self._known: dict[str, dict[str, float]] | None = None
        self._last = 0.0

    def changes(self, force: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        if not force and now - self._last < WATCH_INTERVAL_S:
            return []
        self._last = now
        import ray

        alive = {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n["Alive"]}
        if self._known is None:
            self._known = alive
            return []
        events = [
            {
                "type": "node_added",
                "node": node,
                "resources": _plain(alive[node]),
                "message": f"cluster scaled up: node {_short(node)} joined with "
                f"{_fmt(alive[node])} ({len(alive)} nodes alive)",
            }
            for node in alive.keys() - self._known.keys()
        ] + [
            {
                "type": "node_removed",
                "node": node,
                "resources": _plain(self._known[node]),
                "message": f"cluster scaled down: node {_short(node)} left ({len(alive)} nodes alive)",
            }
            for node in self._known.keys() - alive.keys()
        ]
        self._known = alive
        return events


def _short(node: str) -> str:
    return f"{node[:6]}…{node[-6:]}"  # fake and test node ids share long prefixes


def _plain(resources: dict[str, float]) -> dict[str, float]:
    """A node's resources for an event's data, without Ray's per-node `node:<ip>` marker."""
    return {k: float(v) for k, v in resources.items() if not k.startswith("node:")}
