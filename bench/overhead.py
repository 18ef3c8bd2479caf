"""Per-step orchestration overhead: Cairn's bookkeeping vs the same function as a bare Ray task.

Runs a chain of N no-op steps (each waits for the previous, as in a real DAG) two ways in one Ray
session on this machine:
  - peer:  N sequential `ray.get(bare.remote(i))` calls;
  - cairn: one workflow of N steps through the engine: fingerprint, cache lookup, database
           state changes and events, MLflow nested run + params + dataset inputs + metrics,
           artifact sealing (manifest + sha256) and lineage edges.
Prints both per step and the difference, which is what Cairn adds. Target: ≤ 50 ms per step.

With no work in the step (work 0 ms) every MLflow write (≈7 ms each on its SQLite store, ~6 a
step) is on the critical path, because the run waits for the tracker to flush. With real work
in the step the tracker's background thread writes while the next step runs, so what remains
is Cairn's database bookkeeping, sealing and Ray round trips.

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


def workflow(n: int, folder: Path, first: int = 0, work_ms: int = 0) -> Path:
    lines = ["name: overhead", "steps:"]
    for i in range(n):
        lines += [
            f"  s{i}:",
            "    kind: bench_noop",
            f"    config: {{i: {first + i}, work_ms: {work_ms}}}",
        ]
        if i:
            lines.append(f"    inputs: {{prev: s{i - 1}.dataset}}")
    folder.mkdir(parents=True, exist_ok=True)
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
    ap.add_argument(
        "--work-ms",
        type=int,
        nargs="+",
        default=[0, 200],
        help="simulated work per step (sleep), the same for peer and Cairn",
    )
    args = ap.parse_args()

    # Ray workers import the no-op stage's module by name: put bench/ on their path.
    bench_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [bench_dir, os.environ.get("PYTHONPATH")])
    )
    import _noop_stage  # registers the kind `bench_noop`
    import ray

    from cairn.engine import Engine
    from cairn.engine.backends.ray import RayExecutor
    from cairn.settings import Settings
    from cairn.testing import MemoryTracker
    from cairn.workflow import load_workflow

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    bare = ray.remote(_noop_stage.bare)
    ray.get(bare.remote(-1, tempfile.mkdtemp()))  # warm a worker

    print(f"chain of {args.steps} steps, median of {args.repeats} runs, tracker={args.tracker}")
    print(
        f"{'work per step':<16}{'bare Ray task':>16}{'Cairn step':>14}{'Cairn adds':>14}{'ratio':>9}"
    )
    for work_ms in args.work_ms:
        peer, cairn = [], []
        for _ in range(args.repeats):
            tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-"))
            t0 = time.perf_counter()
            for i in range(args.steps):
                ray.get(bare.remote(i, str(tmp / "bare"), work_ms))
            peer.append((time.perf_counter() - t0) / args.steps)

            settings = Settings.from_env(tmp / "home")
            tracker = MemoryTracker() if args.tracker == "memory" else None
            engine = Engine(settings, executor=RayExecutor(), tracker=tracker)
            # first use creates the databases (MLflow: ~5 s of migrations): not a per-step cost
            engine.run(load_workflow(workflow(1, tmp / "warm", first=10_000)))
            wf = load_workflow(workflow(args.steps, tmp, work_ms=work_ms))
            t0 = time.perf_counter()
            result = engine.run(wf)  # includes flushing every MLflow write
            cairn.append((time.perf_counter() - t0) / args.steps)
            assert result.state == "succeeded", result.error
            assert all(s.state == "succeeded" for s in result.steps.values())
        p, c = statistics.median(peer), statistics.median(cairn)
        print(
            f"{work_ms:>10} ms{p * 1000:>16.1f} ms{c * 1000:>11.1f} ms{(c - p) * 1000:>11.1f} ms{c / p:>8.2f}×"
        )
    print("target: Cairn adds ≤ 50 ms per step")
    ray.shutdown()


if __name__ == "__main__":
    main()
