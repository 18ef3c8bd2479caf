"""When a cached endpoint stands for a serve step: the stage's answer to the engine's cache hit.

An endpoint artifact is one of two things, and `keep_serving` (a runtime choice, outside the
fingerprint) says which one a run asks for:

- **a record** (not kept): the model was served, answered its smoke requests, and the server
  was stopped. Nothing live is described, so the same model and identity config give the same
  answer: a cache hit, and no server starts.
- **a live server** (kept): reused only while the recorded server is still what the record
  says: its process runs on this host, is still the server (port and model directory on its
  command line, listening), `/health` answers and `/v1/models` lists the model, and it was
  started the way this run asks (host, port, key, engine settings). Otherwise the step runs.

A record never stands for a run that keeps its server (the user asked for one to be running),
and a kept server's record never stands for a run that does not (its server may be gone, and
the result would announce it as serving).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cairn.stage import InputArtifact, Reuse
from cairn.stages.serve.config import ServeConfig

# The runtime fields that shape a running server: a kept one started otherwise is not reused.
LAUNCH_FIELDS = ("host", "api_key_env", "enforce_eager", "gpu_memory_utilization", "kv_cache_gb")


def launch_settings(config: ServeConfig) -> dict[str, Any]:
    """What the endpoint records of how its server was started (compared on reuse)."""
    return {f: getattr(config, f) for f in LAUNCH_FIELDS} | {"port": config.port}


def reusable(config: ServeConfig, cached: dict[str, InputArtifact]) -> Reuse:
    """Whether the cached endpoint stands for a serve step configured as `config` now."""
    art = cached["endpoint"]
    model = str(art.metadata.get("model_digest", ""))[:12]
    kept = bool(art.metadata.get("kept"))
    if not config.keep_serving:
        if kept:
            return Reuse(
                False,
                "a kept server's endpoint, and this run stops its server after the smoke test",
            )
        return Reuse(
            True,
            f"model {model} was served and smoke-tested by an earlier run (server stopped): no "
            "server started",
        )
    if not kept:
        return Reuse(False, "the record of a stopped server, and this run keeps its server running")
    record = json.loads((art.path / "endpoint.json").read_text(encoding="utf-8"))
    if differs := _launch_differs(config, record):
        return Reuse(False, f"the kept server was started with {differs}")
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            return Reuse(
                False, f"{config.api_key_env} is not set here, so the kept server cannot be asked"
            )
    from cairn.serving import endpoint_problem

    if problem := endpoint_problem(record, api_key=api_key):
        return Reuse(
            False, f"the kept server at {record.get('base_url')} is not serving: {problem}"
        )
    return Reuse(
        True,
        f"the kept server (pid {record['pid']}) at {record['base_url']} is alive and serves "
        f"model {model}: no server started",
    )


def _launch_differs(config: ServeConfig, record: dict[str, Any]) -> str | None:
    """What of this run's launch settings the kept server does not have, or None."""
    launch = record.get("launch")
    if not isinstance(launch, dict):
        return "settings its record does not hold (an endpoint from an older Cairn)"
    if config.port and config.port != record.get("port"):
        return f"port {record.get('port')}, and this run asks for {config.port}"
    for name in LAUNCH_FIELDS:
        if launch.get(name) != getattr(config, name):
            return f"{name}: {launch.get(name)!r}, and this run asks for {getattr(config, name)!r}"
    return None
