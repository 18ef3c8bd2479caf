"""When a cached endpoint stands for a serve step (`cairn.stages.serve.reuse`), and whether a
recorded server is still serving its model (`cairn.serving.endpoint_problem`), against a
stand-in server process: a few lines of Python that answer `/health` and `/v1/models` and carry
`--model DIR --port N` on their command line, as both engines do.

A stopped server's record stands for a run that does not keep its server; a kept server stands
for a run that does only while its process is the recorded one, on this host, answering for
the recorded model, started with the settings this run asks for.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from cairn.serving import endpoint_problem, process
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.serve import ServeConfig
from cairn.stages.serve.reuse import launch_settings, reusable

STAND_IN = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        card = {"id": args["--served-model-name"], "root": args["--model"]}
        body = json.dumps({"data": [card]} if self.path == "/v1/models" else {}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(args["--port"])), H).serve_forever()
"""
DIGEST = "cd" * 32


@pytest.fixture
def server(tmp_path: Path):
    """A stand-in server for model directory `tmp_path/model`, started as a kept one is
    (detached); yields its endpoint record as the serve stage writes it."""
    model = tmp_path / "model"
    model.mkdir()
    port = process.free_port()
    argv = [sys.executable, "-c", STAND_IN, "--model", str(model), "--port", str(port)]
    argv += ["--served-model-name", "endpoint"]
    proc = process.launch(argv, dict(os.environ), tmp_path / "server.log", detach=True)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(proc, url, "endpoint", timeout_s=20)
        yield record(proc.pid, port, model, keep_serving=True)
    finally:
        proc.stop(grace_s=2)


def record(pid: int, port: int, model: Path, **config: object) -> dict:
    url = f"http://127.0.0.1:{port}"
    return {
        "url": url,
        "base_url": f"{url}/v1",
        "host": "127.0.0.1",
        "port": port,
        "served_model_name": "endpoint",
        "model_path": str(model),
        "pid": pid,
        "node": socket.gethostname(),
        "api_key_required": False,
        "model_digest": DIGEST,
        "kept": bool(config.get("keep_serving")),
        "launch": launch_settings(ServeConfig(**config)),  # type: ignore[arg-type]
    }


def cached(endpoint: dict, tmp_path: Path) -> dict[str, InputArtifact]:
    """The record as the engine hands a cached endpoint to `reusable`."""
    art = tmp_path / "artifact"
    art.mkdir(exist_ok=True)
    (art / "endpoint.json").write_text(json.dumps(endpoint))
    meta = {k: endpoint[k] for k in ("base_url", "model_digest", "kept", "pid")}
    return {"endpoint": InputArtifact(art, ArtifactType.ENDPOINT, "ef" * 32, meta)}


def test_a_stopped_servers_record_stands_only_for_a_run_that_stops_its_server(tmp_path):
    stopped = record(os.getpid(), 9, tmp_path / "gone")  # nothing of it is running
    stopped["pid"], stopped["kept"] = None, False
    hit = reusable(ServeConfig(), cached(stopped, tmp_path))
    assert hit.ok and "no server started" in hit.why and DIGEST[:12] in hit.why
    keep = reusable(ServeConfig(keep_serving=True), cached(stopped, tmp_path))
    assert not keep.ok and "stopped server" in keep.why


def test_a_live_kept_server_is_reused_by_a_run_that_keeps_its_server(server, tmp_path):
    assert endpoint_problem(server) is None
    hit = reusable(ServeConfig(keep_serving=True), cached(server, tmp_path))
    assert hit.ok, hit.why
    assert f"pid {server['pid']}" in hit.why and server["base_url"] in hit.why
    # A run that does not keep its server wants a stopped one's record, not this live one.
    assert not reusable(ServeConfig(), cached(server, tmp_path)).ok
    # Asked for on its own port too; another port, or other launch settings, start anew.
    same_port = ServeConfig(keep_serving=True, port=server["port"])
    assert reusable(same_port, cached(server, tmp_path)).ok
    other_port = reusable(ServeConfig(keep_serving=True, port=1), cached(server, tmp_path))
    assert not other_port.ok and "port" in other_port.why
    eager = reusable(ServeConfig(keep_serving=True, enforce_eager=True), cached(server, tmp_path))
    assert not eager.ok and "enforce_eager" in eager.why


def test_a_kept_server_that_is_gone_or_not_what_was_recorded_is_not_reused(server, tmp_path):
    keep = ServeConfig(keep_serving=True)
    cases = {
        "started on host": {**server, "node": "another-host"},
        "is no longer the server": {**server, "pid": os.getpid()},  # a reused pid
        "does not list 'other'": {**server, "served_model_name": "other"},
        "no longer the server ": {**server, "model_path": str(tmp_path / "elsewhere")},
        "older Cairn": {k: v for k, v in server.items() if k != "launch"},
    }
    for why, endpoint in cases.items():
        verdict = reusable(keep, cached(endpoint, tmp_path))
        assert not verdict.ok and why.strip() in verdict.why, (why, verdict.why)
    process.ServerProcess(server["pid"], tmp_path / "server.log").stop(grace_s=2)
    gone = reusable(keep, cached(server, tmp_path))
    assert not gone.ok and f"process {server['pid']} is gone" in gone.why


def test_a_kept_server_with_a_key_is_asked_with_the_key_this_run_names(
    server, tmp_path, monkeypatch
):
    keyed = {**server, "api_key_required": True, "launch": {**server["launch"], "api_key_env": "K"}}
    config = ServeConfig(keep_serving=True, api_key_env="K")
    monkeypatch.delenv("K", raising=False)
    unset = reusable(config, cached(keyed, tmp_path))
    assert not unset.ok and "K is not set" in unset.why
    monkeypatch.setenv("K", "sk-test")
    assert reusable(config, cached(keyed, tmp_path)).ok
    other = reusable(ServeConfig(keep_serving=True), cached(keyed, tmp_path))
    assert not other.ok and "api_key_env" in other.why
