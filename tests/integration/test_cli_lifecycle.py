"""The CLI as a user drives it: SIGKILL a running driver and resume; submit to a real Ray head.

These start their own processes (a `cairn run` driver, a `ray start --head`) and clean up only
what they started: never `ray stop`, which would kill every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import cli_env, free_port, write_tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CAIRN = [sys.executable, "-m", "cairn"]


def cairn(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CAIRN, *args], env=cli_env(home), capture_output=True, text=True, timeout=timeout
    )


def cairn_json(home: Path, *args: str, timeout: float = 600) -> dict:
    p = cairn(home, *args, "--json", timeout=timeout)
    assert p.stdout.strip(), p.stderr[-3000:]
    return json.loads(p.stdout)


def wait_for(pred, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def visible_artifacts_all_sealed(store: Path) -> list[str]:
    """Directories at {kind}/{step}/{fingerprint}/{output} that lack a manifest (must be none)."""
    bad = []
    for d in store.glob("*/*/*/*"):
        if not d.parts[-4].startswith(".") and d.is_dir() and not (d / "manifest.json").exists():
            bad.append(str(d))
    return bad


def test_sigkill_driver_then_resume(tmp_path):
    home = tmp_path / "home"
    wf = write_tiny(tmp_path / "wf", max_steps=300, checkpoint_every=20)
    driver = subprocess.Popen(
        [*CAIRN, "run", str(wf)],
        env=cli_env(home),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def model_training():
            if not (home / "cairn.db").exists():
                return None
            runs = cairn_json(home, "runs").get("runs", [])
            if not runs:
                return None
            st = cairn_json(home, "status", runs[0]["run_id"])
            steps = {s["step"]: s["state"] for s in st["steps"]}
            log = home / "logs" / runs[0]["run_id"] / "model.log"
            # running, and past its first checkpoint report (training is under way)
            if steps.get("model") == "running" and log.exists() and "loss" in log.read_text():
                return runs[0]["run_id"]
            assert driver.poll() is None, driver.stderr.read()[-3000:]
            return None

        run_id = wait_for(model_training, 300, "the model step to be training", every=2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait(30)

    assert visible_artifacts_all_sealed(home / "store") == []
    st = cairn_json(home, "status", run_id)
    assert st["status"] == "running" and st["driver_alive"] is False
    assert {s["step"]: s["state"] for s in st["steps"]} == {
        "corpus": "succeeded",
        "model": "running",
    }

    resumed = cairn_json(home, "resume", run_id, timeout=900)
    assert resumed["status"] == "succeeded", resumed
    assert resumed["steps"]["corpus"]["state"] == "cached"  # not re-run
    assert resumed["steps"]["model"]["state"] == "succeeded"
    assert visible_artifacts_all_sealed(home / "store") == []
    assert not list((home / "store" / ".staging").iterdir()), "the lost run's staging was not swept"

    old = cairn_json(home, "status", run_id)
    assert old["status"] == "failed" and "driver lost" in old["error"]
    new = cairn_json(home, "status", resumed["run_id"])
    assert new["resumed_from"] == run_id


@pytest.fixture
def ray_head():
    """A real Ray head on free ports, stopped by signalling the `ray start --block` we started."""
    gcs, dash = free_port(), free_port()
    # Ray's unix sockets live under --temp-dir, and AF_UNIX paths are capped at 107 bytes.
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray_bin = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
    proc = subprocess.Popen(
        [
            str(ray_bin),
            "start",
            "--head",
            "--block",
            f"--port={gcs}",
            f"--dashboard-port={dash}",
            # The Jobs API needs this head's own agent: the default port (52365) is taken when
            # the session's local Ray (ray_local) started first, and the head would have none.
            f"--dashboard-agent-listen-port={free_port()}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"

    def up():
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return True  # it answers (401 under Ray's token auth): the head is up
        except OSError:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            return False

    try:
        wait_for(up, 120, "the Ray dashboard (Jobs API)")
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:  # it drains for up to 30 s: no need to wait for that
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_to_a_ray_head_then_status_and_logs(tmp_path, ray_head):
    home = tmp_path / "home"
    wf = write_tiny(tmp_path / "wf")
    sub = cairn_json(home, "submit", str(wf), "--address", ray_head)
    assert "run_id" in sub, sub  # an error object instead says why the submission failed
    run_id = sub["run_id"]
    assert sub["status"] == "pending"

    def finished():
        st = cairn_json(home, "status", run_id)
        job = st.get("ray_job_status", "")
        assert not job.endswith(("FAILED", "STOPPED")), cairn(home, "logs", run_id).stdout[-4000:]
        return st if st["status"] in ("succeeded", "failed", "cancelled") else None

    st = wait_for(finished, 600, "the submitted run to finish", every=3)
    logs = cairn(home, "logs", run_id).stdout
    assert st["status"] == "succeeded", (st.get("error"), logs[-4000:])
    assert {s["step"]: s["state"] for s in st["steps"]} == {
        "corpus": "succeeded",
        "model": "succeeded",
    }
    assert st["ray_address"] == ray_head
    # the run's own log, each step's, and the Ray job's driver log (submission id = run id)
    assert "run_started" in logs and "── model ──" in logs
    assert "── ray job driver ──" in logs and run_id in logs

    from cairn.engine.jobs import job_status

    assert job_status(ray_head, run_id).endswith("SUCCEEDED")


def test_cancel_stops_a_training_step(tmp_path):
    home = tmp_path / "home"
    wf = write_tiny(tmp_path / "wf", max_steps=5000, checkpoint_every=50)
    driver = subprocess.Popen(
        [*CAIRN, "run", str(wf), "--json"],
        env=cli_env(home),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:

        def training():
            if not (home / "cairn.db").exists():
                return None
            runs = cairn_json(home, "runs").get("runs", [])
            log = home / "logs" / runs[0]["run_id"] / "model.log" if runs else None
            return runs[0]["run_id"] if log and log.exists() and "loss" in log.read_text() else None

        run_id = wait_for(training, 300, "the model step to be training", every=2)
        assert cairn_json(home, "cancel", run_id)["status"] == "cancelling"
        out, _ = driver.communicate(timeout=120)  # the driver ends by itself
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    result = json.loads(out)
    assert driver.returncode == 1
    assert result["status"] == "cancelled"
    assert result["steps"] == {
        **result["steps"],
        "model": {**result["steps"]["model"], "state": "cancelled"},
    }
    assert result["steps"]["corpus"]["state"] == "succeeded"
    st = cairn_json(home, "status", run_id)
    assert [e["type"] for e in st["events"]].count("cancel_requested") == 1
    assert visible_artifacts_all_sealed(home / "store") == []
    assert not list((home / "store" / "pretrain").glob("*/*/model")), (
        "a cancelled step sealed a model"
    )
