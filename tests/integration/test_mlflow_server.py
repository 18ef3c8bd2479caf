"""Cairn against a real MLflow tracking server: the server keeps the artifacts.

Cairn used to create every experiment with `artifact_location=$CAIRN_HOME/mlartifacts/…`, so
against a server the models went to each client's own disk: the server's artifact store stayed
empty, and a second client wrote into the first one's folder. With a server, Cairn names no
location and the server's `--artifacts-destination` holds what is logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import free_port
from tests.integration.servers import wait_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on loopback with a SQLite backend and served artifacts; its URL and the
    folder its artifacts go to."""
    root = tmp_path_factory.mktemp("mlflow-server")
    artifacts = root / "artifacts"
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server"),
            *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"),
            *("--artifacts-destination", str(artifacts)),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(proc, f"{url}/health", 120, (root / "server.log").read_text)
        yield url, artifacts
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def test_with_a_server_the_server_keeps_the_artifacts(mlflow_server, tmp_path: Path) -> None:
    from cairn.tracking.mlflow import MlflowTracker

    url, artifacts = mlflow_server
    client_home = tmp_path / "client-home"
    tracker = MlflowTracker(url, str(client_home / "mlartifacts"))
    mlflow_run = tracker.start_run("r-1", "served", {"a": 1}, {})
    experiment = tracker.client.get_experiment(tracker._experiment("served"))
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment
    (tmp_path / "note.txt").write_text("kept by the server")
    tracker.client.log_artifact(mlflow_run, str(tmp_path / "note.txt"))
    tracker.end(mlflow_run, "succeeded")
    kept = list(artifacts.rglob("note.txt"))
    assert [p.read_text() for p in kept] == ["kept by the server"]
    assert not client_home.exists()  # nothing on the client's disk
