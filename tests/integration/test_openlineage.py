"""OpenLineage over HTTP for the whole tiny lifecycle (the quickstart in miniature): a local
endpoint, started and stopped here, receives every event of the trail's workflow run again in
the trail's home (its steps cache hits) with one evaluate step of its own that really computes;
every event is valid against the spec's schemas, and each says what the step read and made."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from cairn.workflow import load_workflow
from tests.integration.conftest import LIFECYCLE, TRAIL_MODEL, Trail, tiny
from tests.openlineage import Endpoint, validate

# A step the trail does not have: scores the trail's aligned model on fewer examples.
RESCORED = """
  rescored:
    kind: evaluate
    inputs: {model: aligned.model, tasks: ./evals}
    config: {tasks: [shakespeare], limit: 4}
"""


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    server = Endpoint()
    for k in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(k)
    # The client's usual configuration, from the environment.
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", server.url)
    with server:
        yield server


def test_the_lifecycle_sends_valid_events_over_http(trail: Trail, endpoint: Endpoint) -> None:
    text = tiny("ol-lifecycle", **TRAIL_MODEL) + LIFECYCLE + RESCORED  # type: ignore[arg-type]
    result = trail.engine().run(load_workflow(trail.workflow("openlineage.yaml", text)))
    assert result.state == "succeeded", result.error
    states = {n: s.state for n, s in result.steps.items()}
    assert states.pop("rescored") == "succeeded" and set(states.values()) == {"cached"}

    received = endpoint.received
    assert {(r.path, r.headers["Content-Type"]) for r in received} == {
        ("/api/v1/lineage", "application/json")
    }
    events = [r.event for r in received]
    checked: set[str] = set()
    for e in events:  # every one valid, each facet against its own schema where there is one
        checked |= validate(e)
    assert {"parent", "version", "datasetType", "jobType", "cairn", "cairn_config"} <= checked
    assert {"cairn_cache", "cairn_evalScores"} <= checked

    # The workflow run, and a START and a COMPLETE of one run id for every step run under it.
    flow = [e for e in events if e["job"]["name"] == "ol-lifecycle"]
    assert [e["eventType"] for e in flow] == ["START", "COMPLETE"]
    parent = flow[0]["run"]["runId"]
    by_step: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        if e["job"]["name"] != "ol-lifecycle":
            by_step.setdefault(e["job"]["name"].removeprefix("ol-lifecycle."), []).append(e)
    assert set(by_step) == set(result.steps)
    for step, evs in by_step.items():
        assert [e["eventType"] for e in evs] == ["START", "COMPLETE"], step
        assert evs[0]["run"]["runId"] == evs[1]["run"]["runId"]
        assert evs[1]["run"]["facets"]["parent"]["run"]["runId"] == parent
        # each output is the artifact the run recorded, its content digest the version
        outs = {o["name"]: o["facets"]["version"]["datasetVersion"] for o in evs[1]["outputs"]}
        assert outs == {a.uri: a.digest for a in result.steps[step].artifacts.values()}, step

    host = f"file://{socket.gethostname()}"
    # Raw sources are the first steps' inputs, where they lie.
    corpus = by_step["corpus"][1]
    assert {(i["namespace"], i["name"]) for i in corpus["inputs"]} == {
        (host, str((trail.folder / "poems").resolve())),
        (host, str((trail.folder / "evals").resolve())),
    }
    assert {i["facets"]["datasetType"]["subType"] for i in corpus["inputs"]} == {"RAW"}

    # A cache hit names the trail's step run that computed it.
    hit = by_step["aligned"][1]["run"]["facets"]["cairn_cache"]["computedBy"]
    assert [(c["cairnRunId"], c["step"]) for c in hit] == [(trail.result.run_id, "aligned")]

    # The evaluate step that computed: reads the aligned MODEL, and its report carries the scores.
    done = by_step["rescored"][1]
    assert "cairn_cache" not in done["run"]["facets"]
    assert done["run"]["facets"]["cairn_config"]["config"]["limit"] == 4
    aligned = result.steps["aligned"].artifacts["model"]
    [model] = [i for i in done["inputs"] if i["facets"]["datasetType"]["datasetType"] == "MODEL"]
    assert (model["namespace"], model["name"]) == (host, aligned.uri)
    assert model["facets"]["version"]["datasetVersion"] == aligned.digest
    report = result.steps["rescored"].artifacts["eval_report"]
    scores = done["outputs"][0]["facets"]["cairn_evalScores"]
    finite = {k: v for k, v in report.metadata["metrics"].items() if math.isfinite(v)}
    assert scores["metrics"] == finite and finite
    assert scores["modelDigest"] == aligned.digest
