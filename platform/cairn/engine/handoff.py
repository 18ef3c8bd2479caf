"""The MLflow mirror of a run whose steps were all cache hits, written after the run by a process
of its own, so that the run ends as soon as its own state is recorded.

Such a run executes nothing, yet mirroring it in-process would import MLflow and open its store
(seconds, most of a cached re-run) to record the hits. Its tracker calls were held instead
(`BackgroundTracker`) and are plain data: `start` writes them to the run's log folder and starts
`python -m cairn.engine.handoff RUN_ID` in its own session, which replays them on a tracker of
its own and puts the real MLflow ids in Cairn's database in place of the placeholders. A failure
there is recorded in the run's events (`tracking_failed`), with the traceback in the run's
`mirror.log`; the run's state, final already, is Cairn's database's and stays as it is.
"""

from __future__ import annotations

import sys

from cairn import db
from cairn.engine import detached
from cairn.engine.recorder import Recorder, store_mlflow_id
from cairn.settings import Settings
from cairn.tracking import Tracker, TrackingError
from cairn.tracking.background import BackgroundTracker, Call, dump_calls, load_calls

JOURNAL = "mirror-calls.json"


def start(settings: Settings, run_id: str, calls: list[Call]) -> int:
    """Hand `calls` (a run's held tracker calls) to a new process; returns its pid."""
    folder = settings.logs_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOURNAL).write_text(dump_calls(calls))
    return detached.spawn(settings, run_id, ["-m", "cairn.engine.handoff", run_id], "mirror.log")


def replay(settings: Settings, run_id: str) -> bool:
    """Replay the calls `start` left for `run_id`; False (and a `tracking_failed` event) if any
    failed."""
    folder = settings.logs_dir(run_id)
    calls = load_calls((folder / JOURNAL).read_text())
    sessions = db.sessions(settings.database_url)

    def make() -> Tracker:
        from cairn.tracking.mlflow import MlflowTracker

        return MlflowTracker(settings.mlflow_uri, settings.mlflow_artifacts)

    tracker = BackgroundTracker(make, on_id=lambda p, r: store_mlflow_id(sessions, p, r))
    tracker.replay(calls)
    recorder = Recorder(sessions, run_id, folder)
    ok = True
    try:
        tracker.flush()
    except TrackingError as e:
        recorder.tracking_failed(str(e))
        ok = False
    recorder.resolve_mlflow_ids(tracker.real_id)
    (folder / JOURNAL).unlink()
    return ok


if __name__ == "__main__":
    sys.exit(0 if replay(Settings.from_env(), sys.argv[1]) else 1)
