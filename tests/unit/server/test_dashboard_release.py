"""A release's page over a toy release: its card rendered with HTML escaped and its links pointed
at the bundle's files here, its audit and checkpoints, and its files served as text, image or
download (never as a page of this origin), inside the bundle only."""

from __future__ import annotations

import json

import pytest

from cairn.stage import ArtifactType, InputSlot, StageConfig, StageSpec
from cairn.testing import registered
from cairn.workflow import load_workflow
from tests.unit.server.conftest import WF, Deployment

CARD = """# toy-release

<script>alert("card")</script>

![loss](training/loss.png) and [the sums](SHA256SUMS), [elsewhere](https://example.org/x),
[bad](javascript:alert(1)).

| step | loss |
|---|---|
| fit | 0.33 |
"""


def toy_release(config: StageConfig, inputs: dict, ctx) -> dict:  # type: ignore[no-untyped-def,type-arg]
    bundle = ctx.output_path("release") / "toy-release"
    (bundle / "training").mkdir(parents=True)
    (bundle / "checkpoints").mkdir()
    (bundle / "README.md").write_text(CARD)
    (bundle / "SHA256SUMS").write_text("not really\n")
    (bundle / "page.html").write_text("<script>alert('bundle')</script>")
    (bundle / "training" / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    index = [{"step_name": "fit", "step": 2, "tokens_seen": 96, "copied": True,
              "bundle_path": "checkpoints/fit/step-2"}]  # fmt: skip
    (bundle / "checkpoints" / "index.json").write_text(json.dumps(index))
    return {"release": {"bundle": "toy-release", "name": "toy-release", "register": False}}


SPEC = StageSpec(
    kind="toy_release",
    config_model=StageConfig,
    inputs={"model": InputSlot(ArtifactType.MODEL)},
    outputs={"release": ArtifactType.RELEASE},
    run=toy_release,
)


@pytest.fixture
def release(deployment: Deployment) -> str:
    wf = deployment.workflow.with_name("release.yaml")
    wf.write_text(WF + "  publish:\n    kind: toy_release\n    inputs: {model: fit.model}\n")
    with registered(SPEC):
        run = deployment.client.run(load_workflow(wf))
    assert run.state == "succeeded", run.steps["publish"].error
    return run.steps["publish"].artifacts["release"].digest


def test_the_release_page_shows_card_audit_checkpoints_and_lineage(
    deployment: Deployment, release: str
) -> None:
    r = deployment.http.get(f"/ui/releases/{release}", headers=deployment.as_("viewer"))
    assert r.status_code == 200, r.text
    html = r.text
    card = html.split('id="card">')[1].split("</section>")[0]
    assert "<script>" not in card and "&lt;script&gt;" in card  # raw HTML shows as text
    files = f"/ui/releases/{release}/files"
    assert f'src="{files}/training/loss.png"' in card and f'href="{files}/SHA256SUMS"' in card
    assert 'href="https://example.org/x"' in card and 'href="javascript:' not in card
    assert "<table>" in card  # tables are on
    assert "audit FAILED" in html and "checksums" in html  # SHA256SUMS is not a real one
    assert "checkpoints/fit/step-2" in html
    lineage = html.split('id="lineage">')[1].split("</svg>")[0]
    assert "raw source" in lineage and f'href="/ui/artifacts/{release}"' in lineage
    listed = deployment.http.get("/ui/releases", headers=deployment.as_("viewer")).text
    assert f'href="/ui/releases/{release}"' in listed and "toy-release" in listed


def test_a_bundles_files_are_served_as_data_never_as_pages(
    deployment: Deployment, release: str
) -> None:
    viewer = deployment.as_("viewer")
    base = f"/ui/releases/{release}/files"
    card = deployment.http.get(f"{base}/README.md", headers=viewer)
    assert card.status_code == 200 and card.text == CARD
    assert card.headers["content-type"].startswith("text/plain")
    assert card.headers["x-content-type-options"] == "nosniff"
    png = deployment.http.get(f"{base}/training/loss.png", headers=viewer)
    assert png.headers["content-type"] == "image/png"
    html = deployment.http.get(f"{base}/page.html", headers=viewer)
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")
    assert html.headers["content-security-policy"] == "sandbox"
    for escape in ("../manifest.json", "..%2f..%2fcairn.db", "/etc/passwd", "nope.txt"):
        r = deployment.http.get(f"{base}/{escape}", headers=viewer)
        assert r.status_code == 404, escape
    anonymous = deployment.http.get(f"{base}/README.md", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/ui/login")


def test_a_release_page_of_another_artifact_says_what_it_is(deployment: Deployment) -> None:
    model = deployment.run.steps["fit"].artifacts["model"].digest
    r = deployment.http.get(f"/ui/releases/{model}", headers=deployment.as_("viewer"))
    assert r.status_code == 404 and "is a model artifact, not a release" in r.text
