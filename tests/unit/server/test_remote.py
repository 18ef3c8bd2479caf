"""`RemoteClient` reads the server's JSON back into the same types `Client` returns."""

from __future__ import annotations

import pytest

import cairn
from cairn.errors import CairnError, NotFound, SpecError
from cairn.remote import RemoteClient
from tests.unit.server.conftest import Deployment


def remote(deployment: Deployment, role: str) -> RemoteClient:
    client = RemoteClient("http://testserver", deployment.tokens[role])
    deployment.http.headers.update(deployment.as_(role))
    client._http = deployment.http  # the app in-process (TestClient is an httpx.Client)
    return client


def test_status_runs_logs_and_lineage_round_trip(deployment: Deployment) -> None:
    local, there = deployment.client, remote(deployment, "viewer")
    run_id = deployment.run.run_id
    assert there.status(run_id) == local.status(run_id)
    assert there.runs() == local.runs()
    assert there.logs(run_id) == local.logs(run_id)
    model = deployment.run.steps["fit"].artifacts["model"].digest
    assert there.lineage(model[:12]) == local.lineage(model)
    assert there.lineage_graph(model) == local.lineage_graph(model)
    data = deployment.run.steps["count"].artifacts["dataset"].digest
    down = there.lineage_graph(data, "descendants")
    assert {n["digest"] for n in down.nodes} == {data, model}


def test_errors_come_back_as_cairns_own(deployment: Deployment) -> None:
    there = remote(deployment, "submitter")
    with pytest.raises(NotFound, match="no run r-nope"):
        there.status("r-nope")
    bad = deployment.workflow.with_name("bad.yaml")
    bad.write_text("name: bad\nsteps:\n  a: {kind: no_such_kind}\n")
    with pytest.raises(SpecError) as e:
        there.submit(_Wf(bad))
    assert e.value.issues and "no_such_kind" in str(e.value)
    with pytest.raises(CairnError, match="cannot reach the Cairn server"):
        RemoteClient("http://127.0.0.1:9", "x").runs()


class _Wf:
    """What RemoteClient.submit reads of a workflow: its text and path (an invalid one here)."""

    def __init__(self, path) -> None:  # type: ignore[no-untyped-def]
        self.path, self.text = path, path.read_text()


def test_connect_follows_cairn_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_SERVER", "http://127.0.0.1:9")
    assert isinstance(cairn.connect(), RemoteClient)
    monkeypatch.delenv("CAIRN_SERVER")
    assert isinstance(cairn.connect(), cairn.Client)
