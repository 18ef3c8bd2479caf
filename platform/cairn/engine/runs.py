"""The engine: the only owner of run state. It creates, runs, resumes and cancels runs.

`Engine.run` builds one run's parts and hands them to the `Scheduler` (scheduler.py), which
decides what runs when; a `Recorder` (recorder.py) commits every decision to Cairn's database
before it is acted on, a `Mirror` (mirror.py) copies it to MLflow, an `Executor` (backends/)
runs the attempts. Each part is given to the next through its constructor; none reaches into
another. Whether a run's driver is still alive is decided here, from its heartbeat.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cairn import db
from cairn.artifacts.store import ArtifactStore
from cairn.db.models import Event, Run, StepLease, StepRun, utcnow
from cairn.engine import leases
from cairn.engine.backends import Executor
from cairn.engine.mirror import Mirror
from cairn.engine.openlineage import Lineage
from cairn.engine.progress import Display, NullDisplay
from cairn.engine.recorder import Recorder, store_mlflow_id
from cairn.engine.scheduler import Scheduler
from cairn.errors import CairnError, NotFound
from cairn.results import RunResult
from cairn.settings import Settings
from cairn.tracking import Tracker
from cairn.tracking.background import BackgroundTracker
from cairn.workflow import Workflow, parse_workflow

HEARTBEAT_S = 5.0


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
        # The store first: one that cannot be reached (its filesystem's package missing) is
        # refused before a database is created for nothing.
        self.store = ArtifactStore(settings.store, cache_dir=settings.home / "cache")
        self.sessions = db.sessions(settings.database_url)
        self._executor = executor
        self._tracker = tracker
        self._background: BackgroundTracker | None = None
        self.display = display or NullDisplay()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            from cairn.engine.backends.ray import RayExecutor

            self._executor = RayExecutor(address=os.environ.get("RAY_ADDRESS"))
        return self._executor

    @property
    def tracker(self) -> BackgroundTracker:
        """The tracker, behind a background thread: MLflow mirrors state, steps never wait on it.
        MLflow itself is imported on that thread, and only once a call has to run."""
        if self._background is None:
            if self._tracker is None:
                settings = self.settings

                def make() -> Tracker:
                    from cairn.tracking.mlflow import MlflowTracker

                    return MlflowTracker(settings.mlflow_uri, settings.mlflow_artifacts)

                self._background = BackgroundTracker(
                    make, on_id=self._store_mlflow_id, portable=True
                )
            else:
                inner = self._tracker
                self._background = BackgroundTracker(lambda: inner, on_id=self._store_mlflow_id)
        return self._background

    def _store_mlflow_id(self, placeholder: str, real: str) -> None:
        """Replace a placeholder MLflow id in the database by the real one (tracker thread)."""
        store_mlflow_id(self.sessions, placeholder, real)

    # -- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        wf: Workflow,
        run_id: str | None = None,
        resumed_from: str | None = None,
        ray_address: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Record a new run as `pending` (for `submit`, before the job exists). `owner` is who
        asked for it (an API token's name through the server; default: user@host)."""
        rid = run_id or new_run_id()
        owner = owner or local_user()
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
                    owner=owner,
                )
            )
            s.flush()  # the run row must exist before events reference it
            s.add(
                Event(
                    run_id=rid,
                    type="run_created",
                    message=f"run of {wf.name} created by {owner}"
                    + (f", resuming {resumed_from}" if resumed_from else ""),
                    data={"by": owner},
                )
            )
        return rid

    def run(
        self,
        wf: Workflow,
        run_id: str | None = None,
        resumed_from: str | None = None,
        display: Display | None = None,
    ) -> RunResult:
        """Run `wf` to its end (a new run, or the pending one `run_id` that `submit` made)."""
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
        return Scheduler(
            wf,
            run_id,
            resumed_from=resumed_from,
            executor=self.executor,
            recorder=Recorder(self.sessions, run_id, self.settings.logs_dir(run_id)),
            mirror=Mirror(self.tracker, self.store, run_id),
            lineage=Lineage(wf, run_id, self.sessions),
            store=self.store,
            settings=self.settings,
            display=display or self.display,
        ).go()

    def adopt(self, run_id: str) -> Workflow:
        """The workflow of a pending run, as recorded (a driver started by the server, or by
        `submit`, runs exactly what was validated when the run was created)."""
        with self.sessions() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}: see `cairn runs`")
            text, path = run.workflow_text, Path(run.workflow_path)
        return parse_workflow(text, path)

    def resume(
        self, old_run_id: str, run_id: str | None = None, display: Display | None = None
    ) -> RunResult:
        """A new run of `old_run_id`'s workflow, linked to it: what it finished is reused."""
        wf = self.prepare_resume(old_run_id)
        return self.run(wf, run_id=run_id, resumed_from=old_run_id, display=display)

    def prepare_resume(self, old_run_id: str) -> Workflow:
        """`old_run_id`'s workflow, once it is certain no driver still runs it (a run whose
        driver is gone is marked lost first)."""
        with self.sessions.begin() as s:
            old = s.get(Run, old_run_id)
            if old is None:
                raise NotFound(f"no run {old_run_id}: see `cairn runs`")
            if old.state in ("pending", "running") and self.driver_alive(old):
                raise CairnError(
                    f"run {old_run_id} is still running (driver {old.driver_host}:{old.driver_pid}); "
                    f"wait for it or `cairn cancel {old_run_id}` first"
                )
            if old.state in ("pending", "running"):
                self.mark_lost(s, old)
            text, path = old.workflow_text, Path(old.workflow_path)
        return parse_workflow(text, path)

    def driver_alive(self, run: Run) -> bool:
        """Is the process driving `run` still there? Exact on its own host, by heartbeat elsewhere."""
        return leases.driver_alive(run)

    def mark_lost(self, s: Session, run: Run) -> None:
        """A run whose driver is gone: failed, with its steps, staging and MLflow runs settled."""
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
        # Sent now, not held for a run of this process: the resumed run may have a driver of its
        # own (`cairn server` starts one), and this process may never run one.
        self.tracker.start()
        swept = self.store.discard_staging(run.id)
        s.execute(delete(StepLease).where(StepLease.run_id == run.id))  # free for other runs
        s.add(
            Event(
                run_id=run.id, type="driver_lost", message=f"{msg}; removed {swept} staging dir(s)"
            )
        )

    def request_cancel(self, run_id: str, by: str | None = None) -> str:
        by = by or local_user()
        with self.sessions.begin() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}: see `cairn runs`")
            if run.state not in ("pending", "running"):
                return run.state
            run.cancel_requested = True
            s.add(
                Event(
                    run_id=run_id,
                    type="cancel_requested",
                    message=f"cancel requested by {by}",
                    data={"by": by},
                )
            )
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


def local_user() -> str:
    """Who runs this process, as a run's owner: user@host."""
    import getpass

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
