"""Per-step orchestration overhead: Cairn's bookkeeping vs the same function as a bare Ray task.

Runs a chain of N no-op steps (each waits for the previous, as in a real DAG) two ways in one Ray
session on this machine:
  - peer:  N sequential `ray.get(bare.remote(i))` calls;
  - cairn: one workflow of N steps through the engine: fingerprint, cache lookup, database
           state changes and events, MLflow nested run + params + dataset inputs + metrics,
           artifact sealing (manifest + sha256) and lineage edges.
Prints both per step and the difference, which is what Cairn adds. Target: ≤ 50 ms per step.

    .venv/bin/python bench/overhead.py [--steps 20] [--tracker mlflow|memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")


def workflow(n: int, folder: Path) -> Path:
    lines = ["name: overhead", "steps:"]
    for i in range(n):
        lines += [f"  s{i}:", "    kind: bench_noop", f"    config: {{i: {i}}}"]
        if i:
            lines.append(f"    inputs: {{prev: s{i - 1}.dataset}}")
    p = folder / "overhead.yaml"
    p.write_text("\n".join(lines) + "\n")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tracker", choices=["mlflow", "memory"], default="mlflow")
    args = ap.parse_args()

    import ray

    from cairn import stages
    from cairn.engine import Engine
    from cairn.executor import RayExecutor
    from cairn.settings import Settings
    from cairn.spec import load_workflow
    from cairn.tracking import MemoryTracker

    stages._KINDS["bench_noop"] = "_noop_stage"
    import _noop_stage

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    bare = ray.remote(_noop_stage.bare)
    ray.get(bare.remote(-1, tempfile.mkdtemp()))  # warm a worker

    peer, cairn = [], []
    for rep in range(args.repeats):
        tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
        t0 = time.perf_counter()
        for i in range(args.steps):
            ray.get(bare.remote(i, str(tmp / "bare")))
        peer.append((time.perf_counter() - t0) / args.steps)

        settings = Settings.from_env(tmp / "home")
        tracker = MemoryTracker() if args.tracker == "memory" else None
        engine = Engine(settings, executor=RayExecutor(), tracker=tracker)
        wf = load_workflow(workflow(args.steps, tmp))
        if (
            rep == 0
        ):  # first use creates the databases (MLflow: ~5 s of migrations): not per-step cost
            engine.run(load_workflow(workflow(1, tmp / "warm")))
        t0 = time.perf_counter()
        result = engine.run(wf)
        cairn.append((time.perf_counter() - t0) / args.steps)
        assert result.state == "succeeded", result.error
        assert all(s.state == "succeeded" for s in result.steps.values())

    p, c = statistics.median(peer), statistics.median(cairn)
    print(
        f"chain of {args.steps} no-op steps, median of {args.repeats} runs, tracker={args.tracker}"
    )
    print(f"{'':<28}{'per step':>12}")
    print(f"{'bare Ray task (peer)':<28}{p * 1000:>10.1f} ms")
    print(f"{'Cairn step':<28}{c * 1000:>10.1f} ms")
    print(f"{'Cairn overhead':<28}{(c - p) * 1000:>10.1f} ms   (target ≤ 50 ms)")
    print(f"{'ratio':<28}{c / p:>10.1f} ×")
    ray.shutdown()


if __name__ == "__main__":
    main()
