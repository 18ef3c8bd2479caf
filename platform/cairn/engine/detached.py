"""A run driven by its own process on this machine: what `cairn server` starts for a submission
that names no Ray cluster (the embedded engine).

The run is recorded `pending` first (with its workflow text); the driver, `python -m cairn run
--run-id ID`, adopts it from the database, heartbeats, and obeys `cancel` through the database
like any run. It lives in its own session, so restarting the server neither kills it nor loses
it: everything about it is in the database and its log folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from cairn.settings import Settings


def start(settings: Settings, run_id: str) -> int:
    """Start the driver of the pending run `run_id`; returns its pid. Its output goes to the
    run's `driver.log` (shown by `cairn logs`)."""
    folder = settings.logs_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    # A child on this machine gets the deployment as the server sees it, credentials included:
    # unlike a Ray job's runtime_env, a local process environment is readable by no API.
    env = {
        **os.environ,
        "CAIRN_HOME": str(settings.home),
        "CAIRN_DATABASE_URL": settings.database_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "CAIRN_STORE": settings.store,
        "CAIRN_CHECKPOINTS": str(settings.checkpoints),
    }
    with open(folder / "driver.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn", "run", "--run-id", run_id],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=settings.home,
            start_new_session=True,
        )
    # Reap it when it ends: an unreaped child stays a zombie, which `kill(pid, 0)` (how the
    # engine tells a live driver) would take for a live one.
    threading.Thread(target=proc.wait, name=f"reap-{run_id}", daemon=True).start()
    return proc.pid
