"""The engine: runs a validated workflow and is the only owner of run state.

For each step, once its inputs exist: compute its fingerprint, reuse a verified cached artifact
or run it on the executor, record the outcome. Every state change is committed to Cairn's
database before it is acted on (a step run is `running` in the database before its task is
submitted), so a driver killed at any point leaves a state that `cairn resume` can continue from.
MLflow is written after the database: it mirrors the state, it does not hold it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from cairn import db
from cairn.db.models import Event, Run, StepRun, utcnow
from cairn.display import Display, NullDisplay
from cairn.errors import CairnError
from cairn.executor import Executor, RayExecutor
from cairn.settings import Settings
from cairn.spec import Workflow
from cairn.store import ArtifactStore
from cairn.tracking import BackgroundTracker, MlflowTracker, Tracker

HEARTBEAT_S = 5.0
DRIVER_LOST_S = 30.0  # no heartbeat for this long: the driver is gone


@dataclass
class StepResult:
    step: str
    kind: str
    state: str = "pending"
    fingerprint: str | None = None
    attempts: int = 0
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunResult:
    run_id: str
    state: str
    steps: dict[str, StepResult]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.state,
            "error": self.error,
            "steps": {
                name: {
                    "kind": r.kind,
                    "state": r.state,
                    "fingerprint": r.fingerprint,
                    "attempts": r.attempts,
                    "error": r.error,
                    "artifacts": r.artifacts,
                }
                for name, r in self.steps.items()
            },
        }


def new_run_id() -> str:
    return datetime.now(UTC).strftime("r-%Y%m%d-%H%M%S-") + os.urandom(3).hex()


def code_version(path: Path) -> str | None:
    """The git commit of the workflow file's repository, with `-dirty` if it has local changes."""
    import subprocess

    try:
        head = subprocess.run(
            ["git", "-C", str(path.parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(path.parent), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class Engine:
    def __init__(
        self,
        settings: Settings,
        executor: Executor | None = None,
        tracker: Tracker | None = None,
        display: Display | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = db.sessions(settings.database_url)
        self.store = ArtifactStore(settings.store, cache_dir=settings.home / "cache")
        self._executor = executor
        self._tracker = tracker
        self._background: BackgroundTracker | None = None
        self.display = display or NullDisplay()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = RayExecutor(address=os.environ.get("RAY_ADDRESS"))
        return self._executor

    @property
    def tracker(self) -> BackgroundTracker:
        """The tracker, behind a background thread: MLflow mirrors state, steps never wait on it."""
        if self._background is None:
            inner = self._tracker or MlflowTracker(
                self.settings.mlflow_uri, self.settings.mlflow_artifacts
            )
            self._background = BackgroundTracker(inner, on_id=self._store_mlflow_id)
        return self._background

    def _store_mlflow_id(self, placeholder: str, real: str) -> None:
        """Replace a placeholder MLflow id in the database by the real one (tracker thread)."""
        with self.sessions.begin() as s:
            for model in (Run, StepRun):
                s.execute(
                    update(model)
                    .where(model.mlflow_run_id == placeholder)
                    .values(mlflow_run_id=real)
                )

    # -- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        wf: Workflow,
        run_id: str | None = None,
        resumed_from: str | None = None,
        ray_address: str | None = None,
    ) -> str:
        """Record a new run as `pending` (for `submit`, before the job exists)."""
        rid = run_id or new_run_id()
        with self.sessions.begin() as s:
            s.add(
                Run(
                    id=rid,
                    workflow_name=wf.name,
                    workflow_path=str(wf.path),
                    workflow_text=wf.text,
                    workflow_digest=wf.digest,
                    state="pending",
                    resumed_from=resumed_from,
                    code_version=code_version(wf.path),
                    ray_address=ray_address,
                )
            )
            s.flush()  # the run row must exist before events reference it
            s.add(
                Event(
                    run_id=rid,
                    type="run_created",
                    message=f"run of {wf.name} created"
                    + (f", resuming {resumed_from}" if resumed_from else ""),
                )
            )
        return rid

    def run(
        self, wf: Workflow, run_id: str | None = None, resumed_from: str | None = None
    ) -> RunResult:
        with self.sessions() as s:
            existing = s.get(Run, run_id) if run_id else None
        if existing is None:
            run_id = self.create_run(wf, run_id, resumed_from)
        elif existing.state != "pending":
            raise CairnError(
                f"run {run_id} is already {existing.state}; start a new run or `cairn resume {run_id}`"
            )
        else:
            resumed_from = existing.resumed_from
        assert run_id is not None
        from cairn.execution import Execution

        return Execution(self, wf, run_id, resumed_from).go()

    def resume(self, old_run_id: str, run_id: str | None = None) -> RunResult:
        from cairn.spec import parse_workflow

        with self.sessions.begin() as s:
            old = s.get(Run, old_run_id)
            if old is None:
                raise CairnError(f"no run {old_run_id}: see `cairn runs`")
            if old.state in ("pending", "running") and self.driver_alive(old):
                raise CairnError(
                    f"run {old_run_id} is still running (driver {old.driver_host}:{old.driver_pid}); "
                    f"wait for it or `cairn cancel {old_run_id}` first"
                )
            if old.state in ("pending", "running"):
                self._mark_lost(s, old)
            text, path = old.workflow_text, Path(old.workflow_path)
        wf = parse_workflow(text, path)
        return self.run(wf, run_id=run_id, resumed_from=old_run_id)

    def driver_alive(self, run: Run) -> bool:
        """Is the process driving `run` still there? Exact on its own host, by heartbeat elsewhere."""
        if run.driver_host == socket.gethostname() and run.driver_pid:
            try:
                os.kill(run.driver_pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # exists, owned by someone else
        if run.heartbeat_at is None:
            return run.state == "pending" and _age(run.created_at) < DRIVER_LOST_S * 4
        return _age(run.heartbeat_at) < DRIVER_LOST_S

    def _mark_lost(self, s: Any, run: Run) -> None:
        msg = "driver lost: no heartbeat since " + (
            run.heartbeat_at.isoformat() if run.heartbeat_at else "start"
        )
        run.state, run.error, run.finished_at = "failed", msg, utcnow()
        for sr in s.scalars(
            select(StepRun).where(
                StepRun.run_id == run.id, StepRun.state.in_(("pending", "running"))
            )
        ):
            sr.state, sr.error, sr.finished_at = "failed", msg, utcnow()
            if sr.mlflow_run_id and not sr.mlflow_run_id.startswith("pending:"):
                self.tracker.end(sr.mlflow_run_id, "failed")
        if run.mlflow_run_id and not run.mlflow_run_id.startswith("pending:"):
            self.tracker.end(run.mlflow_run_id, "failed")
        swept = self.store.discard_staging(run.id)
        s.add(
            Event(
                run_id=run.id, type="driver_lost", message=f"{msg}; removed {swept} staging dir(s)"
            )
        )

    def request_cancel(self, run_id: str) -> str:
        with self.sessions.begin() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise CairnError(f"no run {run_id}: see `cairn runs`")
            if run.state not in ("pending", "running"):
                return run.state
            run.cancel_requested = True
            s.add(Event(run_id=run_id, type="cancel_requested", message="cancel requested"))
            if not self.driver_alive(run):
                # Nobody is there to act on the request: settle the state here.
                run.state, run.finished_at = "cancelled", utcnow()
                for sr in s.scalars(
                    select(StepRun).where(
                        StepRun.run_id == run_id, StepRun.state.in_(("pending", "running"))
                    )
                ):
                    sr.state, sr.finished_at, sr.error = "cancelled", utcnow(), "run cancelled"
                s.add(
                    Event(
                        run_id=run_id,
                        type="run_finished",
                        message="cancelled (driver was not running)",
                    )
                )
                return "cancelled"
        return "cancelling"


def _age(ts: datetime) -> float:
    if ts.tzinfo is None:  # SQLite hands back naive datetimes
        ts = ts.replace(tzinfo=UTC)
    return (datetime.now(UTC) - ts).total_seconds()
