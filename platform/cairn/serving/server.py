"""Start a model server (either engine), get a handle on it, stop it: the one entry point that the
serve stage, the `cairn serve` command and the tests share.

`start_server` returns only once the server answers `/health` and lists the model in
`/v1/models`; if the engine dies or does not answer in time it stops whatever was started and
raises a `ServingError` holding the tail of the server's log. A server started with `detach=True`
outlives the calling process (and the Ray worker it may run in); `stop_endpoint` stops it later
from what the serve stage recorded in its endpoint artifact.

A server that other machines could reach (a non-loopback `host`) needs an `api_key` or an
explicit `insecure=True`; `cairn.serving.access` has the rule and says where the key goes.
"""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cairn.serving import access, engines, process
from cairn.serving.chat import FALLBACK_CHAT_TEMPLATE, has_chat_template
from cairn.serving.engines import EngineChoice, LaunchOptions, ServingError


def client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to `host`."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


@dataclass
class Server:
    """A running server. `url` is the root; OpenAI clients take `base_url` (`url` + "/v1")."""

    url: str
    host: str
    port: int
    served_model_name: str
    model_dir: Path
    engine: EngineChoice
    started_at: str
    startup_s: float
    process: process.ServerProcess = field(repr=False)
    detached: bool = False
    api_key: str | None = field(default=None, repr=False)  # clients send it as a bearer token

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self, grace_s: float = 15.0) -> None:
        """Stop every process of the server (SIGTERM, SIGKILL after `grace_s`)."""
        self.process.stop(grace_s)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        """The server as JSON-able data, as recorded in an endpoint artifact."""
        return {
            "url": self.url,
            "base_url": self.base_url,
            "host": self.host,
            "port": self.port,
            "served_model_name": self.served_model_name,
            "model_path": str(self.model_dir),
            "engine": self.engine.name,
            "engine_version": self.engine.version,
            "engine_distribution": self.engine.distribution,
            "engine_reason": self.engine.reason,
            "started_at": self.started_at,
            "startup_s": round(self.startup_s, 3),
            "pid": self.pid,
            "node": socket.gethostname(),  # the host whose pid that is
            "log_path": str(self.log_path),
            "api_key_required": self.api_key is not None,  # never the key itself
        }


def start_server(
    model_dir: str | Path,
    *,
    engine: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    served_model_name: str | None = None,
    max_model_len: int | None = None,
    dtype: str = "auto",
    gpu_memory_utilization: float | None = None,
    kv_cache_gb: float | None = None,
    enforce_eager: bool = False,
    startup_timeout_s: float = 600.0,
    log_dir: str | Path | None = None,
    detach: bool = False,
    extra_args: tuple[str, ...] = (),
    cancelled: Callable[[], bool] = lambda: False,
    api_key: str | None = None,
    insecure: bool = False,
) -> Server:
    """Start serving `model_dir` (a Hugging Face model directory) and wait until it answers.

    `port` 0 takes a free port. The log (and the fallback chat template, when the tokenizer has
    none) go under `log_dir`, a new temporary directory by default. `gpu_memory_utilization`
    (vLLM only) defaults to 0.1 on vLLM's CPU build, where it is a share of host RAM, and to
    vLLM's own default on GPUs. `extra_args` are appended to the engine's command line as they
    are. With `api_key`, requests under /v1 must carry it (`Authorization: Bearer KEY`); a
    `host` other machines can reach is refused without one unless `insecure`.
    """
    api_key = api_key or None
    access.check_exposure(
        host,
        api_key,
        insecure,
        "pass api_key= (clients send it as a bearer token), serve on 127.0.0.1, or pass "
        "insecure=True on a network you trust",
    )
    model_dir = Path(model_dir).expanduser().resolve()
    if not model_dir.is_dir():
        raise ServingError(f"model directory {model_dir} does not exist")
    choice = engines.choose_engine(engine)
    opts = LaunchOptions(
        served_model_name=served_model_name or model_dir.name,
        host=host,
        port=port or process.free_port(host or "0.0.0.0"),
        dtype=engines.resolve_dtype(model_dir, dtype),
        max_model_len=engines.resolve_max_model_len(model_dir, max_model_len),
        gpu_memory_utilization=gpu_memory_utilization,
        kv_cache_gb=kv_cache_gb,
        enforce_eager=enforce_eager,
        extra_args=tuple(extra_args),
        api_key=api_key,
    )
    process.check_port_free(host, opts.port)
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="cairn-serve-"))
    logs.mkdir(parents=True, exist_ok=True)
    if not has_chat_template(model_dir):
        template = logs / "chat_template.jinja"
        template.write_text(FALLBACK_CHAT_TEMPLATE, encoding="utf-8")
        opts = dataclasses.replace(opts, chat_template=template)
    argv, env = engines.command(choice, model_dir, opts)
    log_path = logs / f"server-{opts.port}.log"
    with log_path.open("a", encoding="utf-8") as log:
        log.write(
            f"# cairn: {choice.name} {choice.version} ({choice.reason})\n# $ {' '.join(argv)}\n"
        )
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    proc = process.launch(argv, env, log_path, detach=detach)
    url = f"http://{_url_host(client_host(host))}:{opts.port}"
    try:
        startup_s = process.wait_ready(
            proc,
            url,
            opts.served_model_name,
            timeout_s=startup_timeout_s,
            what=f"{choice.name} server for {model_dir}",
            cancelled=cancelled,
            api_key=api_key,
        )
    except BaseException:
        proc.stop(grace_s=5.0)  # never leave a half-started engine behind
        raise
    return Server(
        url=url,
        host=host,
        port=opts.port,
        served_model_name=opts.served_model_name,
        model_dir=model_dir,
        engine=choice,
        started_at=started_at,
        startup_s=startup_s,
        process=proc,
        detached=detach,
        api_key=api_key,
    )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def stop_endpoint(endpoint: dict[str, Any], grace_s: float = 15.0) -> bool:
    """Stop a server recorded in an endpoint artifact (`endpoint.json`, as a dict) if it is still
    the process that was recorded; returns whether one was stopped."""
    if _not_the_recorded_process(endpoint) is not None:
        return False
    pid, port = int(endpoint["pid"]), int(endpoint["port"])
    host = client_host(str(endpoint.get("host", "127.0.0.1")))
    process.ServerProcess(pid=pid, log_path=Path(endpoint.get("log_path", ""))).stop(grace_s)
    deadline = time.monotonic() + 5.0
    while process.port_open(host, port, timeout_s=0.2) and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def endpoint_problem(
    endpoint: dict[str, Any], api_key: str | None = None, timeout_s: float = 2.0
) -> str | None:
    """Why the server recorded in `endpoint` (an `endpoint.json`, as a dict) is not serving its
    model here and now, or None when it is: its recorded process runs on this host and still
    listens on the recorded port, `/health` answers 200, and `/v1/models` lists the served name
    (and, where the engine says, the recorded model directory). A server that wants a key is
    asked with `api_key`; without one, its model listing is not checked."""
    node = endpoint.get("node")
    if node != socket.gethostname():
        return (
            f"it was started on host {node}, not this one ({socket.gethostname()}), so its "
            "process cannot be checked from here"
            if node
            else "its record does not say which host runs it"
        )
    if (problem := _not_the_recorded_process(endpoint)) is not None:
        return problem
    url = str(endpoint["url"])
    try:
        status, _ = process.get_json(f"{url}/health", timeout_s=timeout_s)
        if status != 200:
            return f"{url}/health answers {status}"
        if endpoint.get("api_key_required") and not api_key:
            return None
        status, models = process.get_json(f"{url}/v1/models", timeout_s, api_key)
    except OSError as e:
        return f"{url} does not answer ({e})"
    if status != 200:
        return f"{url}/v1/models answers {status}"
    name, model_path = endpoint.get("served_model_name"), endpoint.get("model_path")
    cards = [m for m in _cards(models) if m.get("id") == name]
    if not cards:
        return f"{url}/v1/models does not list {name!r}"
    roots = {c["root"] for c in cards if c.get("root")}
    if roots and model_path not in roots:
        return f"it serves {name!r} from {', '.join(sorted(roots))}, not {model_path}"
    return None


def _not_the_recorded_process(endpoint: dict[str, Any]) -> str | None:
    """Why the recorded pid is not the recorded server, or None when it is. The pid alone is not
    proof: after the server exits the pid may be reused, so the process must also have the
    recorded port (and model directory, where recorded) on its command line and be listening."""
    pid, port = int(endpoint["pid"]), int(endpoint["port"])
    if not process.pid_alive(pid):
        return f"its process {pid} is gone"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"the command line of process {pid} cannot be read"
    model_path = endpoint.get("model_path")
    if str(port).encode() not in cmdline or (model_path and model_path.encode() not in cmdline):
        return f"process {pid} is no longer the server (its pid was reused)"
    host = client_host(str(endpoint.get("host", "127.0.0.1")))
    if not process.port_open(host, port):
        return f"nothing listens on {host}:{port}"
    return None


def _cards(listing: object) -> list[dict[str, Any]]:
    data = listing.get("data") if isinstance(listing, dict) else None
    return [m for m in data or [] if isinstance(m, dict)]
