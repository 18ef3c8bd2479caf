"""Processes of a run's own on this machine, detached from the one that starts them: the driver
`cairn server` starts for a submission that names no Ray cluster (the embedded engine), and the
MLflow handoff of a run of cache hits (`cairn.engine.handoff`).

A server's run is recorded `pending` first (with its workflow text); its driver, `python -m
cairn run --run-id ID`, adopts it from the database, heartbeats, and obeys `cancel` through the
database like any run. Each process lives in its own session, so restarting the server (or a
Ctrl-C meant for the CLI) neither kills it nor loses it: everything about it is in the database
and the run's log folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from cairn.settings import Settings

PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding cairn/


def spawn(settings: Settings, run_id: str, args: list[str], log: str) -> int:
    """`python ARGS` in a session of its own, seeing the deployment as this process does, its
    output appended to the run's `log`; returns its pid."""
    folder = settings.logs_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p),
        **settings.local_env(),
    }
    with open(folder / log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=settings.home,
            start_new_session=True,
        )
    # Reap it when it ends: an unreaped child stays a zombie, which `kill(pid, 0)` (how the
    # engine tells a live driver) would take for a live one.
    threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()
    return proc.pid


def start(settings: Settings, run_id: str) -> int:
    """Start the driver of the pending run `run_id`; returns its pid. Its output goes to the
    run's `driver.log` (shown by `cairn logs`)."""
    return spawn(settings, run_id, ["-m", "cairn", "run", "--run-id", run_id], "driver.log")
