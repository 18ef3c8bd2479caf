"""Start processes that do one thing at the same moment: each runs `BARRIER` after its imports
(it says it is ready, then waits for a file), and all are let go together once every one is
ready. No fixed delay to guess on a loaded 2-core machine, and none wasted on a quiet one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Python a child runs where it must wait for the others; `GO` is the file that lets it go.
BARRIER = """
import os as _os, sys as _sys, time as _time
print("ready", flush=True)
while not _os.path.exists(GO):
    _time.sleep(0.002)
"""


def together(
    code: str, args: list[list[str]], go: Path, env: dict[str, str] | None = None
) -> list[str]:
    """Run `python -c code ARGS...` once per entry of `args`, each with `GO` defined before
    `code` (which runs `BARRIER` where it must wait); the standard output of each after the
    barrier. Any failure or traceback fails the test with its stderr."""
    prelude = f"GO = {str(go)!r}\n"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", prelude + code, *a],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in args
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == "ready\n", (line, p.stderr.read()[-3000:] if p.stderr else "")
        go.touch()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
            outs.append(out.strip())
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
