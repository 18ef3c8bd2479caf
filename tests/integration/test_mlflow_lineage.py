"""Lineage that reads in MLflow, on the session trail's real MLflow store (nothing new trained).

With `MlflowClient` alone, a person walks from the registered release back to the data: the
version is the released model's LoggedModel (its eval scores, lineage digests); that model's run
read the dpo model (a model input), whose run read the sft model, whose run read the pretrained
model, whose run read the curated dataset (its source URI and Cairn's full digest). The
registered version loads with `mlflow.transformers.load_model("models:/NAME/VERSION")` and
generates. And the MLflow UI, served by `mlflow server` over the same store, shows the version,
the logged model and the runs in Debian's headless chromium: the pages are saved as PNGs (copied
to /tmp/mlflow-shots/) for a person to look at.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Trail, free_port, settings_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path("/tmp/mlflow-shots")
RELEASE = "tiny-release"  # the trail's release step's name (conftest LIFECYCLE)

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def client(trail: Trail) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(settings_for(trail.home).mlflow_uri)


def released(client: Any) -> tuple[Any, Any]:
    """The trail's registered version and the LoggedModel it is (its source names it)."""
    [version] = client.search_model_versions(f"name = '{RELEASE}'")
    assert version.source.startswith("models:/m-"), version.source
    model_id = version.source.removeprefix("models:/")
    assert version.tags["cairn.logged_model_id"] == model_id
    return version, client.get_logged_model(model_id)


def test_mlflow_walks_from_the_registered_model_to_its_dataset(trail: Trail, client: Any) -> None:
    steps = trail.result.steps
    version, model = released(client)
    assert model.tags["cairn.model_digest"] == steps["aligned"].artifacts["model"].digest
    assert model.tags["cairn.release_digest"] == steps["publish"].artifacts["release"].digest
    assert model.tags["cairn.lineage.corpus"] == steps["corpus"].artifacts["dataset"].digest
    scores = steps["scores"].artifacts["eval_report"].metadata["metrics"]
    assert scores and {m.key: m.value for m in model.metrics} == pytest.approx(scores)
    assert model.params["hf.hidden_size"] == "64" and model.params["name"] == RELEASE
    assert version.run_id == model.source_run_id
    registered = json.loads(model.tags["mlflow.modelVersions"])  # the UI's "Model versions"
    assert [(v["name"], str(v["version"])) for v in registered] == [(RELEASE, str(version.version))]
    assert model.tags["cairn.release_digest"] in version.description

    # Each model's run names the model it read; the chain ends at pretrain, which read data.
    walked = []
    while True:
        run = client.get_run(model.source_run_id)
        walked.append(run.data.tags["cairn.step"])
        inputs = {i.model_id for i in run.inputs.model_inputs}
        if not inputs:
            break
        [read] = inputs
        model = client.get_logged_model(read)
        step = model.tags["cairn.step"]
        assert model.tags["cairn.artifact_digest"] == steps[step].artifacts["model"].digest
        assert model.tags["cairn.uri"] == steps[step].artifacts["model"].uri
        assert model.params["hf.hidden_size"] == "64"  # what the model is, from its config
    assert walked == ["publish", "aligned", "chat", "model"]
    assert model.params["max_steps"] == "40"  # the pretrain step's own config

    corpus = steps["corpus"].artifacts["dataset"]
    [data] = run.inputs.dataset_inputs
    assert data.dataset.name == "corpus.dataset"
    source = json.loads(data.dataset.source)
    assert source == {"uri": corpus.uri, "cairn_digest": corpus.digest}
    assert {t.key: t.value for t in data.tags}["cairn.artifact_digest"] == corpus.digest
    assert data.dataset.digest == corpus.digest[:36]  # MLflow's limit; the full one is above


def test_the_registered_version_loads_with_mlflow_transformers(trail: Trail) -> None:
    import mlflow

    from cairn.tracking.registry import global_tracking_uri

    with global_tracking_uri(settings_for(trail.home).mlflow_uri):
        pipe = mlflow.transformers.load_model(f"models:/{RELEASE}/1")
    prompt_ids = pipe.tokenizer("To be", return_tensors="pt").input_ids
    out = pipe.model.generate(prompt_ids, max_new_tokens=1, do_sample=False)
    assert out.shape[1] == prompt_ids.shape[1] + 1


@pytest.fixture(scope="module")
def mlflow_ui(trail: Trail) -> Iterator[str]:
    """`mlflow server` over the trail's store on a free localhost port; its URL."""
    settings = settings_for(trail.home)
    port = free_port()
    log = (trail.home / f"mlflow-server-{port}.log").open("w")
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            settings.mlflow_uri,
            "--default-artifact-root",
            settings.mlflow_artifacts,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"mlflow server exited: see {log.name}"
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, f"mlflow server did not start: see {log.name}"
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver): the browser tests never download a browser",
)
def test_the_mlflow_ui_shows_the_release_its_model_and_runs(
    trail: Trail, client: Any, mlflow_ui: str, tmp_path: Path
) -> None:
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    version, model = released(client)
    exp = model.experiment_id
    [read] = client.get_run(model.source_run_id).inputs.model_inputs
    dpo = client.get_logged_model(read.model_id)
    pages = {  # what each page must show before it is saved
        "1-model-version": (f"#/models/{RELEASE}/versions/{version.version}", "cairn.model_digest"),
        "2-logged-model": (f"#/experiments/{exp}/models/{model.model_id}", "release digest"),
        "3-release-run": (f"#/experiments/{exp}/runs/{model.source_run_id}", dpo.name),
    }
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1500")  # most of each page, no scrolling
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    SHOTS.mkdir(exist_ok=True)
    try:
        for name, (path, expect) in pages.items():
            browser.get(f"{mlflow_ui}/{path}")
            # The UI renders client-side: wait for what the page must show.
            WebDriverWait(browser, 30).until(
                lambda b, e=expect: e in b.find_element("tag name", "body").text,
                f"{name}: '{expect}' never shown",
            )
            for close in browser.find_elements("css selector", "button[aria-label='Close']"):
                close.click()  # the MLflow Assistant's panel, which would hide half the page
            time.sleep(1)  # the rest of the page's requests settle
            shot = tmp_path / f"{name}.png"
            browser.save_screenshot(str(shot))
            shutil.copy(shot, SHOTS / shot.name)
            assert shot.stat().st_size > 10_000
    finally:
        browser.quit()
