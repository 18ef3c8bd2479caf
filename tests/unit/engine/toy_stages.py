"""Toy stage kinds for engine unit tests: tiny, fast, and able to fail or stall on demand.

They register themselves when this module is imported, as a plugin's kinds would; a Ray worker
that is handed a toy step imports this module by name and finds them the same way."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import Field

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputSlot, Runtime, StageConfig, StageSpec, register


class CountConfig(StageConfig):
    factor: int = Field(1, ge=1)
    note: Runtime[str] = Field("", description="changes nothing: not in the fingerprint")


def count_run(config, inputs, ctx):
    lines = 0
    for src in inputs["sources"]:
        files = [src.path] if src.path.is_file() else sorted(src.path.rglob("*.txt"))
        for f in files:
            lines += len(f.read_text().splitlines())
    out = ctx.output_path("dataset")
    (out / "counts.json").write_text(json.dumps({"lines": lines * config.factor}))
    ctx.log_metrics({"lines": lines}, step=0)
    ctx.progress(1, 1, "counted")
    ctx.log(f"counted {lines} lines")
    return {"dataset": {"lines": lines * config.factor}}


COUNT = register(
    StageSpec(
        kind="toy_count",
        config_model=CountConfig,
        inputs={"sources": InputSlot(ArtifactType.RAW, many=True)},
        outputs={"dataset": ArtifactType.DATASET},
        run=count_run,
    )
)


class FitConfig(StageConfig):
    width: int = Field(4, ge=1)
    fail_times: int = Field(0, ge=0, description="fail this many attempts first (per counter file)")
    counter: str | None = None
    sleep_s: float = 0.0
    bug: bool = Field(False, description="fail as a bug would: not a CairnError")
    log_every: Runtime[int] = Field(1, ge=1, description="metrics every this many steps")


def fit_run(config, inputs, ctx):
    if config.counter:
        p = Path(config.counter)
        n = int(p.read_text()) if p.exists() else 0
        p.write_text(str(n + 1))
        if n < config.fail_times:
            # write something first: a failed attempt must leave no visible artifact
            (ctx.output_path("model") / "partial.bin").write_bytes(b"half")
            raise StageError(f"planned failure {n + 1}")
    if config.bug:
        return {"model": {"ratio": 1 / 0}}
    deadline = time.monotonic() + config.sleep_s
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.05)
    lines = json.loads((inputs["dataset"].path / "counts.json").read_text())["lines"]
    out = ctx.output_path("model")
    (out / "config.json").write_text(json.dumps({"width": config.width, "lines": lines}))
    (out / "weights.bin").write_bytes(bytes(range(256)) * config.width)
    for i in range(0, 3, config.log_every):
        ctx.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
    return {"model": {"width": config.width}}


FIT = register(
    StageSpec(
        kind="toy_fit",
        config_model=FitConfig,
        inputs={"dataset": InputSlot(ArtifactType.DATASET)},
        outputs={"model": ArtifactType.MODEL},
        run=fit_run,
    )
)


def tune_run(config, inputs, ctx):
    out = ctx.output_path("model")
    weights = (inputs["model"].path / "weights.bin").read_bytes()
    (out / "weights.bin").write_bytes(weights[::-1])
    return {"model": {"tuned": True}}


TUNE = register(
    StageSpec(
        kind="toy_tune",
        config_model=StageConfig,
        inputs={"model": InputSlot(ArtifactType.MODEL)},
        outputs={"model": ArtifactType.MODEL},
        run=tune_run,
    )
)
