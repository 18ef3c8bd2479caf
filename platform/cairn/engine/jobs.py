"""`cairn submit`: the same run, driven by a Ray job on a cluster (Ray Jobs API).

The run is recorded as `pending` before the job exists, with the Ray submission id equal to the
Cairn run id, so `cairn status` and `cairn logs` can find it from either side. The job's
entrypoint is `python -m cairn run FILE --run-id ID`, which adopts the pending run. If the
submission fails, the pending run is removed again: nothing is left behind.

The job's environment (its `runtime_env`, readable through the Jobs API and the dashboard) holds
no secret: `Settings.env` strips credentials from the URLs it forwards, and the cluster's nodes
supply them (`cairn.settings` says how). Each credential left out is said once, on stderr and as
a `secrets_withheld` event of the run, with where the cluster must supply it.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete

from cairn.db.models import Event, Run
from cairn.engine.backends import TRAIN_ENV
from cairn.engine.runs import Engine
from cairn.errors import CairnError
from cairn.workflow import Workflow

AGENT_WAIT_S = 60.0


def ray_auth_env() -> None:
    """Ray clusters started with `ray start` use token auth: set the mode before `import ray`."""
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"


def job_client(address: str) -> Any:
    ray_auth_env()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:
        raise CairnError(
            f"cannot reach the Ray Jobs API at {address}: {e}. Check that the head is up "
            "(`ray status`) and that the address is the dashboard's (http://HEAD:8265)"
        ) from e


def submit(
    engine: Engine,
    wf: Workflow,
    address: str,
    python: str | None = None,
    working_dir: str | None = None,
    note: Callable[[str], object] | None = None,
    owner: str | None = None,
) -> str:
    """Submit `wf` as a Ray job; returns the run id. `note` gets one line per credential kept
    out of the job's environment (default: printed to stderr)."""
    client = job_client(address)
    run_id = engine.create_run(wf, ray_address=address, owner=owner)
    host = urlparse(address).hostname or ""
    # A cluster on this machine shares our venv; a remote one runs its own `python`.
    py = python or (sys.executable if host in ("127.0.0.1", "localhost") else "python")
    wf_arg = wf.path.name if working_dir else str(wf.path)
    runtime_env: dict[str, Any] = {"env_vars": {**engine.settings.env(), **TRAIN_ENV}}
    withheld = engine.settings.withheld()
    if working_dir:
        runtime_env["working_dir"] = working_dir
    try:
        _submit_job(
            client,
            entrypoint=f"{shlex.quote(py)} -m cairn run {shlex.quote(wf_arg)} --run-id {run_id}",
            submission_id=run_id,
            runtime_env=runtime_env,
            metadata={"cairn.run_id": run_id, "cairn.workflow": wf.name},
        )
    except Exception as e:
        with engine.sessions.begin() as s:
            s.execute(delete(Event).where(Event.run_id == run_id))
            s.execute(delete(Run).where(Run.id == run_id))
        raise CairnError(f"submitting to {address} failed: {e}") from e
    if withheld:
        with engine.sessions.begin() as s:
            s.add_all(
                Event(run_id=run_id, type="secrets_withheld", message=line) for line in withheld
            )
        for line in withheld:
            (note or _to_stderr)(f"note: {line}")
    return run_id


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _submit_job(client: Any, **job: Any) -> None:
    """Submit, waiting out a head whose job agent is still starting ("No available agent to
    submit job": a just-started or busy head), for up to AGENT_WAIT_S."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            client.submit_job(**job)
            return
        except Exception as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def job_logs(address: str, run_id: str) -> str:
    return job_client(address).get_job_logs(run_id)


def job_status(address: str, run_id: str) -> str:
    return str(job_client(address).get_job_status(run_id))


def stop_job(address: str, run_id: str) -> bool:
    return bool(job_client(address).stop_job(run_id))
