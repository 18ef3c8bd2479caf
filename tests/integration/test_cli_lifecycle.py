"""The CLI as a user drives it: SIGKILL a running driver and resume; submit to a real Ray head;
cancel a training step.

These start their own processes (a `cairn run` driver, a `ray start --head`) and clean up only
what they started: never `ray stop`, which would kill every Ray on the machine. They run in the
session trail's home (conftest), so their curate step is a cache hit and they pay only for the
step each is about; each workflow has a name of its own, so each test finds its own run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

from .conftest import Trail, cli_env, free_port, stock, tiny

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CAIRN = [sys.executable, "-m", "cairn"]


def cairn(trail: Trail, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CAIRN, *args], env=trail.env(), capture_output=True, text=True, timeout=timeout
    )


def cairn_json(trail: Trail, *args: str, timeout: float = 600) -> dict:
    p = cairn(trail, *args, "--json", timeout=timeout)
    assert p.stdout.strip(), p.stderr[-3000:]
    return json.loads(p.stdout)


def new_run_training(trail: Trail, before: set[str], step: str, driver) -> str | None:
    """The run a driver started since `before` (the run log folders then), once its `step` has
    logged a training loss. Read from the log files: no CLI call, so the wait reacts at once."""
    for folder in (trail.home / "logs").glob("r-*"):
        log = folder / f"{step}.log"
        if folder.name not in before and log.exists() and "loss" in log.read_text():
            return folder.name
    assert driver.poll() is None, driver.stderr.read()[-3000:] if driver.stderr else ""
    return None


def run_folders(trail: Trail) -> set[str]:
    return {p.name for p in (trail.home / "logs").glob("r-*")}


def _worker_pids(trail: Trail, before: set[str]) -> list[int]:
    """The training workers' pids the new runs' step logs name (`workers_started`)."""
    pids = []
    for run in run_folders(trail) - before:
        for log in (trail.home / "logs" / run).glob("*.log"):
            pids += [int(p) for p in re.findall(r"rank \d+ pid (\d+)", log.read_text())]
    return pids


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


def test_sigkill_driver_then_resume(trail: Trail):
    home = trail.home
    wf = trail.workflow(
        "sigkill.yaml", tiny("sigkill", max_steps=120, checkpoint_every=20, workers=1)
    )
    before = run_folders(trail)
    checkpoints = set(home.glob("checkpoints/model-*/train/step-00000040"))
    driver = subprocess.Popen(
        [*CAIRN, "run", str(wf)],
        env=trail.env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Training, and past its first checkpoint (step 40's is being written, so step 20's is
        # in). Watched on disk, not in the step log: progress lines reach the log only every
        # few seconds, by when a fast machine has finished these 120 steps.
        def second_checkpoint():
            assert driver.poll() is None, driver.stderr.read()[-3000:] if driver.stderr else ""
            return set(home.glob("checkpoints/model-*/train/step-00000040")) - checkpoints

        wait_for(second_checkpoint, 300, "the model step's checkpoint at step 40", every=0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        # The Ray Train workers too (the step log names their pids): orphaned, they went on for
        # a second or two, which on a fast machine finished all 120 steps, so the resume had
        # nothing left to resume (when the whole machine dies, nothing goes on).
        for pid in _worker_pids(trail, before):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        driver.wait(30)

    [run_id] = run_folders(trail) - before
    assert visible_artifacts_all_sealed(home / "store") == []
    st = cairn_json(trail, "status", run_id)
    assert st["status"] == "running" and st["driver_alive"] is False
    assert {s["step"]: s["state"] for s in st["steps"]} == {
        "corpus": "cached",
        "model": "running",
    }

    resumed = cairn_json(trail, "resume", run_id, timeout=900)
    assert resumed["status"] == "succeeded", resumed
    assert resumed["steps"]["corpus"]["state"] == "cached"  # not re-run
    assert resumed["steps"]["model"]["state"] == "succeeded"
    # It went on from a checkpoint the killed run wrote (which one depends on how far training
    # got before the kill landed), not from the start.
    model_log = (home / "logs" / resumed["run_id"] / "model.log").read_text()
    resumed_at = re.search(r"pretrain: resumed from step (\d+)", model_log)
    assert resumed_at and 20 <= int(resumed_at.group(1)) < 120, model_log
    assert visible_artifacts_all_sealed(home / "store") == []
    assert not list((home / "store" / ".staging").glob(f"{run_id}-*")), (
        "the lost run's staging was not swept"
    )

    old = cairn_json(trail, "status", run_id)
    assert old["status"] == "failed" and "driver lost" in old["error"]
    new = cairn_json(trail, "status", resumed["run_id"])
    assert new["resumed_from"] == run_id


def test_cancel_stops_a_training_step(trail: Trail):
    wf = trail.workflow(
        "cancelled.yaml", tiny("cancelled", max_steps=5000, checkpoint_every=50, workers=1)
    )
    before = run_folders(trail)
    driver = subprocess.Popen(
        [*CAIRN, "run", str(wf), "--json"],
        env=trail.env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        run_id = wait_for(
            lambda: new_run_training(trail, before, "model", driver),
            300,
            "the model step to be training",
            every=0.2,
        )
        assert cairn_json(trail, "cancel", run_id)["status"] == "cancelling"
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
    assert result["steps"]["corpus"]["state"] == "cached"
    st = cairn_json(trail, "status", run_id)
    assert [e["type"] for e in st["events"]].count("cancel_requested") == 1
    store = trail.home / "store"
    assert visible_artifacts_all_sealed(store) == []
    fingerprint = result["steps"]["model"]["fingerprint"]
    assert not list(store.glob(f"pretrain/*/{fingerprint}/model")), (
        "a cancelled step sealed a model"
    )


@pytest.fixture(scope="module")
def ray_head():
    """A real Ray head on free ports, stopped by signalling the `ray start --block` we started.
    One for the module: the submit tests (the last ones here) share it."""
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
            proc.wait(5)
        except subprocess.TimeoutExpired:  # it drains for up to 30 s: no need to wait for that
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_to_a_ray_head_then_status_and_logs(trail: Trail, ray_head):
    wf = trail.workflow(
        "submitted.yaml", tiny("submitted", max_steps=4, checkpoint_every=4, workers=1)
    )
    sub = cairn_json(trail, "submit", str(wf), "--address", ray_head)
    assert "run_id" in sub, sub  # an error object instead says why the submission failed
    run_id = sub["run_id"]
    assert sub["status"] == "pending"

    def finished():
        st = cairn_json(trail, "status", run_id)
        job = st.get("ray_job_status", "")
        assert not job.endswith(("FAILED", "STOPPED")), cairn(trail, "logs", run_id).stdout[-4000:]
        return st if st["status"] in ("succeeded", "failed", "cancelled") else None

    st = wait_for(finished, 600, "the submitted run to finish", every=3)
    logs = cairn(trail, "logs", run_id).stdout
    assert st["status"] == "succeeded", (st.get("error"), logs[-4000:])
    # The job's driver found the trail's dataset in the same home, and trained on the cluster.
    assert {s["step"]: s["state"] for s in st["steps"]} == {
        "corpus": "cached",
        "model": "succeeded",
    }
    assert st["ray_address"] == ray_head
    # the run's own log, each step's, and the Ray job's driver log (submission id = run id)
    assert "run_started" in logs and "── model ──" in logs
    assert "── ray job driver ──" in logs and run_id in logs

    from cairn.engine.jobs import job_status

    assert job_status(ray_head, run_id).endswith("SUCCEEDED")


SECRET = "s3cret-XYZ"


@pytest.mark.postgres
def test_a_submitted_job_never_sees_the_database_password(
    ray_head, postgres_url: str, tmp_path: Path
):
    """The password in CAIRN_DATABASE_URL stays with the submitter: not in the job's info
    (runtime_env, metadata, entrypoint), its logs, Cairn's logs and events, nor MLflow; the
    job's driver connects without it (the local PostgreSQL trusts local connections, as a
    cluster's nodes would supply it through PGPASSWORD, ~/.pgpass or a password file)."""
    from mlflow import MlflowClient

    from cairn.engine.jobs import job_client, job_logs

    assert postgres_url.startswith("postgresql+psycopg://postgres@")
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@", 1)
    home = tmp_path / "home"
    wf = stock(tmp_path / "wf") / "secret.yaml"
    wf.write_text(tiny("secret").split("  model:")[0])  # the curate step alone
    env = {**cli_env(home), "CAIRN_DATABASE_URL": url}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CAIRN, *args], env=env, capture_output=True, text=True, timeout=600)

    sub = run("submit", str(wf), "--address", ray_head, "--json")
    assert sub.returncode == 0, sub.stderr[-3000:]
    run_id = json.loads(sub.stdout)["run_id"]
    note = f"note: CAIRN_DATABASE_URL goes to the job without its credentials, as {postgres_url};"
    assert note in " ".join(sub.stderr.split())  # unwrapped: the console may wrap it

    # Waited on through the Jobs API in this process: a `cairn status` every few seconds
    # would cost a Python start-up each.
    client = job_client(ray_head)
    wait_for(lambda: client.get_job_status(run_id).is_terminal(), 600, "the job", every=1)
    st = json.loads(run("status", run_id, "--json").stdout)
    logs = run("logs", run_id).stdout
    assert st["status"] == "succeeded", (st.get("error"), logs[-4000:])
    assert "secrets_withheld" in [e["type"] for e in st["events"]]

    info = client.get_job_info(run_id)
    assert info.runtime_env["env_vars"]["CAIRN_DATABASE_URL"] == postgres_url
    seen = {
        "stdout and stderr of cairn submit": sub.stdout + sub.stderr,
        "the job's info": repr(info),
        "the job's driver log": job_logs(ray_head, run_id),
        "cairn logs and status": logs + json.dumps(st),
        "Cairn's log files": "".join(p.read_text() for p in (home / "logs").rglob("*.log")),
    }
    mlflow = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    runs = mlflow.search_runs(experiments, filter_string=f"tags.`cairn.run_id` = '{run_id}'")
    assert len(runs) == 2  # the workflow's run and its step's
    seen["MLflow params and tags"] = json.dumps([[r.data.params, r.data.tags] for r in runs])
    assert [where for where, text in seen.items() if SECRET in text] == []
