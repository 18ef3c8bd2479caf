"""A stage that does nothing but sleep `work_ms`, so a benchmark sees only the orchestration around it."""

from __future__ import annotations

import time

from pydantic import Field

from cairn.stage import ArtifactType, InputSlot, StageConfig, StageSpec, register


class NoopConfig(StageConfig):
    i: int = Field(0, description="makes each step's fingerprint distinct")
    work_ms: int = Field(0, ge=0, description="simulated work (sleep), the same in the peer")


def run(config, inputs, ctx):
    time.sleep(config.work_ms / 1000)
    out = ctx.output_path("dataset")
    (out / "value.txt").write_text(str(config.i))
    ctx.log_metrics({"i": config.i}, step=0)
    return {"dataset": {"i": config.i}}


def bare(i: int, out_dir: str, work_ms: int = 0) -> int:
    """The peer: the same work as a plain function, no bookkeeping."""
    import pathlib

    time.sleep(work_ms / 1000)
    p = pathlib.Path(out_dir) / f"{i}"
    p.mkdir(parents=True, exist_ok=True)
    (p / "value.txt").write_text(str(i))
    return i


SPEC = register(
    StageSpec(
        kind="bench_noop",
        config_model=NoopConfig,
        inputs={"prev": InputSlot(ArtifactType.DATASET, optional=True)},
        outputs={"dataset": ArtifactType.DATASET},
        run=run,
    )
)
