"""The MLflow tracker never lets its tracking URI's credentials out in an error: MLflow quotes
the URI ("API request to http://user:password@host/... failed"), and tracker errors reach the
run's events, logs and `cairn status`."""

from __future__ import annotations

import traceback

import pytest

from cairn.tracking import TrackingError
from cairn.tracking.mlflow import MlflowTracker

SECRET = "s3cret-XYZ"


def test_an_unreachable_server_is_reported_without_the_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # port 1 refuses at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    tracker = MlflowTracker(f"http://alice:{SECRET}@127.0.0.1:1", str(tmp_path))
    with pytest.raises(TrackingError) as e:
        tracker.start_run("r-1", "wf", {"lr": 0.1}, {})
    assert "API request to http://***:***@127.0.0.1:1/" in str(e.value)  # still says where
    assert SECRET not in "".join(traceback.format_exception(e.value))
    assert "alice" not in str(e.value)  # over HTTP the user name may be a token


def test_an_error_without_credentials_keeps_its_type(tmp_path) -> None:
    class Client:
        def set_terminated(self, run_id: str, status: str) -> None:
            raise LookupError(f"no run {run_id}")

    tracker = MlflowTracker(f"http://alice:{SECRET}@mlflow.invalid", str(tmp_path))
    tracker.client = Client()  # type: ignore[assignment]
    with pytest.raises(LookupError, match="no run r-9"):
        tracker.end("r-9", "failed")


def test_history_reads_every_metric_in_step_order(tmp_path) -> None:
    from types import SimpleNamespace as NS

    class Client:
        def get_run(self, run_id: str) -> NS:
            return NS(data=NS(metrics={"val/loss": 2.0, "train/loss": 1.0}))

        def get_metric_history(self, run_id: str, key: str) -> list[NS]:
            points = {
                "train/loss": [(4, 1.0, 9), (0, 3.0, 5), (2, 2.0, 7)],
                "val/loss": [(4, 2.0, 9)],
            }
            return [NS(step=s, value=v, timestamp=t) for s, v, t in points[key]]

    tracker = MlflowTracker(f"http://alice:{SECRET}@mlflow.invalid", str(tmp_path))
    tracker.client = Client()  # type: ignore[assignment]
    assert tracker.history("m-1") == {
        "train/loss": [(0, 3.0), (2, 2.0), (4, 1.0)],
        "val/loss": [(4, 2.0)],
    }
