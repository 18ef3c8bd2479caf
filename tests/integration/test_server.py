"""`cairn server` as a team runs it: a real server process over the trail's deployment, the CLI
pointed at it with CAIRN_SERVER/CAIRN_TOKEN, a workflow submitted through it and run by a driver
process it starts, and its door locked by default."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from .conftest import TRAIL_MODEL, Trail, cli_env, tiny
from .servers import CAIRN, cairn_server, token

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CAIRN, *args], env=env, capture_output=True, text=True, timeout=600)


def test_first_start_prints_an_admin_token_and_a_restart_keeps_it(tmp_path) -> None:
    env = cli_env(tmp_path / "home")
    with cairn_server(env) as server:
        assert server.first_token and server.first_token.startswith("cairn_")
        assert "Cairn server at http://127.0.0.1:" in server.proc.stderr.readline()
        assert server.get("/api/runs")[0] == 401
        status, body = server.get("/api/runs", server.first_token)
        assert status == 200 and json.loads(body)["runs"] == []
        assert server.get("/docs")[0] == 200  # OpenAPI's page, its assets served offline
        assert server.get("/openapi.json")[0] == 200
    with cairn_server(env) as again:  # nothing of its own to lose: the token is in the database
        assert again.first_token is None
        assert again.get("/api/tokens", server.first_token)[0] == 200


def test_no_auth_refuses_to_listen_beyond_loopback(tmp_path) -> None:
    p = cli(cli_env(tmp_path / "home"), "server", "--no-auth", "--host", "0.0.0.0")
    assert p.returncode != 0
    assert "--no-auth refuses to listen on 0.0.0.0" in p.stderr
    assert "Traceback" not in p.stderr


def test_the_cli_through_the_server_says_what_it_says_locally(trail: Trail) -> None:
    local = trail.env()
    viewer = token(local, "cli-viewer", "viewer")
    run_id = trail.result.run_id
    model = trail.result.steps["aligned"].artifacts["model"].digest
    with cairn_server(local) as server:
        remote = {**local, "CAIRN_SERVER": server.url, "CAIRN_TOKEN": viewer}
        # (every call is a process start: logs and the graph formats are compared in-process by
        # tests/unit/server/test_remote.py)
        for args in (("status", run_id), ("lineage", model[:16])):
            here, there = cli(local, *args, "--json"), cli(remote, *args, "--json")
            assert there.returncode == 0, there.stderr
            assert json.loads(there.stdout) == json.loads(here.stdout), args
        listed = json.loads(cli(remote, "runs", "--json").stdout)["runs"]
        assert run_id in {r["run_id"] for r in listed}
        # A viewer cannot cancel: the server's 403, as Cairn's one-line error.
        p = cli(remote, "cancel", run_id)
        assert p.returncode == 1 and "viewer role" in p.stderr and "Traceback" not in p.stderr
        p = cli({**remote, "CAIRN_TOKEN": "cairn_not-a-token"}, "runs")
        assert p.returncode == 1 and "CAIRN_TOKEN" in p.stderr


def test_submit_through_the_server_runs_and_records_who(trail: Trail) -> None:
    local = trail.env()
    submitter = token(local, "cli-submitter", "submitter")
    # The trail's own curate and pretrain steps: cache hits, so the driver has little to do.
    wf = trail.workflow("through-server.yaml", tiny("through-server", **TRAIL_MODEL))
    with cairn_server(local) as server:
        remote = {**local, "CAIRN_SERVER": server.url, "CAIRN_TOKEN": submitter}
        # `cairn run` through a server submits, waits, and reports as a local run would.
        p = cli(remote, "run", str(wf), "--json")
        assert p.returncode == 0, p.stderr
        ran = json.loads(p.stdout)
        run_id = ran["run_id"]
        assert {s["state"] for s in ran["steps"].values()} == {"cached"}
        done = json.loads(cli(remote, "status", run_id, "--json").stdout)
        assert done["owner"] == "cli-submitter"
        resumed = cli(remote, "resume", run_id, "--json")
        assert resumed.returncode == 0, resumed.stderr
        result = json.loads(resumed.stdout)
        assert result["status"] == "succeeded"
        assert {s["state"] for s in result["steps"].values()} == {"cached"}
        status = json.loads(cli(remote, "status", result["run_id"], "--json").stdout)
        assert status["resumed_from"] == run_id and status["owner"] == "cli-submitter"
        assert any("created by cli-submitter" in e["message"] for e in status["events"])
        # The driver the server started wrote its output where `cairn logs` finds it.
        logs = json.loads(cli(remote, "logs", run_id, "--json").stdout)["logs"]
        assert "driver" in logs and "run" in logs
        # A step's log streams as server-sent events, ending once the step has finished.
        step = next(k for k in logs if k not in ("run", "driver"))
        req = urllib.request.Request(
            f"{server.url}/api/runs/{run_id}/logs/{step}/stream",
            headers={"Authorization": f"Bearer {submitter}"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            stream = r.read().decode()
        assert stream.rstrip().endswith("event: end\ndata:")
        body = stream[: stream.index("event: end")]
        lines = [ln[6:] for ln in body.splitlines() if ln.startswith("data: ")]
        assert lines == logs[step].splitlines()
