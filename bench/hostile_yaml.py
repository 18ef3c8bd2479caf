"""`cairn validate` on a YAML alias bomb against the quickstart workflow: time and peak memory.

The bomb is 357 bytes whose aliases expand to 9**9 values; before the bounded loader,
`cairn validate` grew by ~45 MB/s on it until killed. Now it must be refused in well under a
second and under 100 MB. The peer is a normal validation of `workflows/quickstart.yaml` in the
same run: the command (Python start, Cairn's imports, the CLI) and, in this process, the
validation alone (`load_workflow`). Each figure is the median of `--rounds`.

    .venv/bin/python bench/hostile_yaml.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "workflows" / "quickstart.yaml"
BOMB = "name: t\nsteps:\n" + "".join(
    f"  {chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}" if i else '"x"'] * 9) + "]\n"
    for i in range(9)
)
# Runs the command and prints its peak RSS: RUSAGE_CHILDREN of this launcher covers just it.
LAUNCH = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], capture_output=True).returncode\n"
    "print(code, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def command(path: Path) -> tuple[int, float, float]:
    """`cairn validate path` in a fresh process: exit code, seconds, peak RSS in MiB."""
    out = subprocess.run(
        [sys.executable, "-c", LAUNCH, sys.executable, "-m", "cairn", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def in_process(path: Path) -> float:
    """Seconds `load_workflow` takes on `path` (refused or not), imports already paid."""
    from cairn.errors import SpecError
    from cairn.workflow import load_workflow

    t = time.perf_counter()
    with contextlib.suppress(SpecError):  # the bomb's outcome; the CLI's exit code shows it
        load_workflow(path)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(BOMB)
        in_process(QUICKSTART)  # pay the imports once, outside the timing
        rows = {}
        for name, path in (("quickstart.yaml", QUICKSTART), ("alias bomb", bomb)):
            runs = [command(path) for _ in range(args.rounds)]
            rows[name] = {
                "bytes": path.stat().st_size,
                "exit": runs[0][0],
                "command_s": statistics.median(r[1] for r in runs),
                "peak_mib": max(r[2] for r in runs),
                "validate_ms": 1000
                * statistics.median(in_process(path) for _ in range(args.rounds)),
            }
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"`cairn validate`, median of {args.rounds} (peak RSS: the highest)")
    print("| file | bytes | exit | command s | peak RSS MiB | validation alone ms |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['bytes']} | {r['exit']} | {r['command_s']:.2f} | "
            f"{r['peak_mib']:.0f} | {r['validate_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
