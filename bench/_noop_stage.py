"""A stage that does (almost) nothing, so a benchmark sees only the orchestration around it."""

from __future__ import annotations

from pydantic import Field

from cairn.stages.base import ArtifactType, InputSlot, StageConfig, StageSpec


class NoopConfig(StageConfig):
    i: int = Field(0, description="makes each step's fingerprint distinct")


def run(config, inputs, ctx):
    out = ctx.output_path("dataset")
    (out / "value.txt").write_text(str(config.i))
    ctx.log_metrics({"i": config.i}, step=0)
    return {"dataset": {"i": config.i}}


def bare(i: int, out_dir: str) -> int:
    """The peer: the same work as a plain function, no bookkeeping."""
    import pathlib

    p = pathlib.Path(out_dir) / f"{i}"
    p.mkdir(parents=True, exist_ok=True)
    (p / "value.txt").write_text(str(i))
    return i


SPEC = StageSpec(
    kind="bench_noop",
    config_model=NoopConfig,
    inputs={"prev": InputSlot(ArtifactType.DATASET, optional=True)},
    outputs={"dataset": ArtifactType.DATASET},
    run=run,
)
