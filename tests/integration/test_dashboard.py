"""The dashboard in a real browser: Debian's chromium, driven headless through its chromedriver
by Selenium (nothing downloads a browser), against a real `cairn server` process over the
session trail's CAIRN_HOME (nothing new is trained).

One browser and one server for the module. A person's path through it: log in with a token,
the runs list, the trail's run and its DAG, a step's loss curve, the release's lineage back to
a raw source, the endpoints with their model digest; a viewer finds no cancel button (and the
API refuses the cookie's request), while the run's owner cancels it and sees the state change
without a reload. Each page is saved as a screenshot under the test's output and copied to
/tmp/dashboard-shots/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Trail, settings_for
from tests.integration.servers import cairn_server, token

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = Path("/tmp/dashboard-shots")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver): the browser tests never download a browser",
    ),
]


@dataclass
class Dashboard:
    url: str
    tokens: dict[str, str]  # name → secret
    browser: Any  # selenium's WebDriver
    shots: Path
    pending: str  # a run that dash-submitter owns and nothing runs: cancellable

    def open(self, path: str) -> None:
        self.browser.get(self.url + path)

    def shot(self, name: str) -> Path:
        """The whole page (the window grown to its height) as shots/NAME.png, and a copy in
        /tmp/dashboard-shots/ for a person to look at."""
        b = self.browser
        height = b.execute_script("return document.documentElement.scrollHeight")
        b.set_window_size(1280, max(800, min(int(height) + 20, 6000)))
        path = self.shots / f"{name}.png"
        b.save_screenshot(str(path))
        b.set_window_size(1280, 800)
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(path, SHOTS / path.name)
        return path

    def login(self, name: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        b = self.browser
        self.open("/ui/logout")
        b.find_element(By.ID, "token").send_keys(self.tokens[name])
        b.find_element(By.CSS_SELECTOR, "form.login button").click()
        WebDriverWait(b, 15).until(lambda d: "/ui/login" not in d.current_url, b.page_source)


@pytest.fixture(scope="module")
def dash(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cairn.db.models import Run
    from cairn.engine import Engine
    from cairn.workflow import load_workflow

    tokens = {
        "dash-viewer": token(trail.env(), "dash-viewer", "viewer"),
        "dash-submitter": token(trail.env(), "dash-submitter", "submitter"),
    }
    # A run its owner may cancel: recorded a day ago, and no driver ever started for it (so a
    # cancel settles it at once, as it does for a run whose driver died before it began).
    engine = Engine(settings_for(trail.home))
    pending = engine.create_run(
        load_workflow(trail.folder / "lifecycle.yaml"), owner="dash-submitter"
    )
    with engine.sessions.begin() as s:
        s.get_one(Run, pending).created_at = datetime.now(UTC) - timedelta(days=1)

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,800")
    with cairn_server(trail.env()) as server:
        browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            browser.implicitly_wait(5)
            shots = tmp_path_factory.mktemp("shots")
            yield Dashboard(server.url, tokens, browser, shots, pending)
        finally:
            browser.quit()


def test_log_in_and_find_the_trails_run(dash: Dashboard, trail: Trail) -> None:
    from selenium.webdriver.common.by import By

    b = dash.browser
    dash.open("/ui/runs")
    assert "/ui/login" in b.current_url
    dash.shot("01-login")
    dash.login("dash-viewer")
    assert b.current_url.endswith("/ui/runs")
    assert b.find_element(By.ID, "who").text == "dash-viewer viewer"
    row = b.find_element(By.LINK_TEXT, trail.result.run_id)
    dash.shot("02-runs")
    row.click()
    assert b.current_url.endswith(f"/ui/runs/{trail.result.run_id}")
    assert b.find_element(By.ID, "run-state").text == "succeeded"
    boxes = b.find_elements(By.CSS_SELECTOR, "#dag svg g.node")
    assert len(boxes) == len(trail.result.steps) == 7
    assert all("s-succeeded" in box.get_attribute("class") for box in boxes)
    assert len(b.find_elements(By.CSS_SELECTOR, "#dag svg g.edges path")) == 7
    dash.shot("03-run")


def test_a_steps_page_draws_its_loss_curve(dash: Dashboard, trail: Trail) -> None:
    from selenium.webdriver.common.by import By

    b = dash.browser
    dash.open(f"/ui/runs/{trail.result.run_id}")
    model = b.find_element(By.CSS_SELECTOR, '#dag a[href$="/steps/model"]')
    model.click()
    assert b.current_url.endswith("/steps/model")
    loss = b.find_element(By.CSS_SELECTOR, '#charts svg.chart[aria-label="loss"]')
    curves = loss.find_elements(By.TAG_NAME, "polyline")
    assert len(curves) == 2  # train/loss and val/loss
    points = [len(c.get_attribute("points").split()) for c in curves]
    assert max(points) == 20  # TRAIL_MODEL: 40 steps, a loss every 2
    assert "train/loss" in loss.text and "val/loss" in loss.text
    dash.shot("04-step-model")


def test_from_the_release_back_to_a_raw_source(dash: Dashboard, trail: Trail) -> None:
    from selenium.webdriver.common.by import By

    b = dash.browser
    dash.open("/ui/releases")
    dash.shot("05-releases")
    b.find_element(By.LINK_TEXT, "tiny-release").click()
    assert b.find_element(By.ID, "audit-state").text == "audit passed"
    assert "tiny-release" in b.find_element(By.CSS_SELECTOR, "#card h1").text
    assert len(b.find_elements(By.CSS_SELECTOR, "#checkpoints tbody tr")) == 4
    dash.shot("06-release")
    poems = b.find_element(
        By.XPATH,
        "//*[@id='lineage']//*[local-name()='g'][contains(@class,'t-raw')]"
        "[.//*[local-name()='text'][.='poems']]/parent::*[local-name()='a']",
    )
    poems.click()
    assert "/ui/artifacts/" in b.current_url
    assert b.find_element(By.TAG_NAME, "h1").text.startswith("raw")
    assert "nobody: a raw source" in b.page_source
    assert "sonnets.txt" in b.find_element(By.ID, "files").text
    made = b.find_elements(By.CSS_SELECTOR, "#descendants svg g.node")
    assert len(made) >= 7  # the poems → corpus → ... → the release
    dash.shot("07-raw-source")


def test_endpoints_show_the_model_they_serve(dash: Dashboard, trail: Trail) -> None:
    from selenium.webdriver.common.by import By

    model = trail.result.steps["aligned"].artifacts["model"].digest
    dash.open("/ui/endpoints")
    table = dash.browser.find_element(By.ID, "endpoints")
    assert model[:16] in table.text and "stopped" in table.text  # the trail's smoke server
    dash.shot("08-endpoints")


def test_a_viewer_cannot_cancel_but_the_owner_can_and_sees_it_live(
    dash: Dashboard, trail: Trail
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    b = dash.browser
    dash.login("dash-viewer")
    dash.open(f"/ui/runs/{dash.pending}")
    assert b.find_element(By.ID, "run-state").text == "pending"
    b.implicitly_wait(0)
    assert b.find_elements(By.ID, "cancel") == []
    b.implicitly_wait(5)
    # Nor does the API take the viewer's session cookie for it.
    status = b.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/api/runs/{dash.pending}/cancel', {{method: 'POST'}}).then(r => done(r.status));"
    )
    assert status == 403
    dash.shot("09-viewer-no-cancel")

    dash.login("dash-submitter")
    dash.open(f"/ui/runs/{dash.pending}")
    b.execute_script("window.notReloaded = true")
    b.find_element(By.ID, "cancel").click()
    WebDriverWait(b, 15).until(
        lambda d: d.find_element(By.ID, "run-state").text == "cancelled"
    )  # the page's fragment refreshed itself: no reload
    assert b.execute_script("return window.notReloaded") is True
    assert b.find_elements(By.ID, "cancel") == []
    dash.shot("10-owner-cancelled")


def test_every_asset_comes_from_the_server(dash: Dashboard) -> None:
    dash.open("/ui/runs")
    loaded = dash.browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any(u.endswith(".css") or ".css?" in u for u in loaded)
    assert all(u.startswith(dash.url) for u in loaded), loaded
