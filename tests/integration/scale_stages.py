"""A stage kind for the autoscaling test: holds no resources and waits until the cluster has
scaled back down to its head, so the run is still going (and recording events) when it does."""

from __future__ import annotations

import json
import time

import ray
from pydantic import Field

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputSlot, Resources, StageConfig, StageSpec, register


class WaitConfig(StageConfig):
    nodes: int = Field(1, description="wait until this many nodes are alive")
    timeout_s: float = Field(120.0)


def wait_run(config, inputs, ctx):
    deadline = time.monotonic() + config.timeout_s
    while time.monotonic() < deadline:
        alive = sum(n["Alive"] for n in ray.nodes())
        if alive <= config.nodes:
            time.sleep(1.5)  # the engine looks at the cluster every second: let it see this too
            out = ctx.output_path("report")
            (out / "report.json").write_text(json.dumps({"alive": alive}))
            return {"report": {"alive": alive}}
        time.sleep(0.5)
    raise StageError(f"the cluster did not scale down to {config.nodes} node(s)")


SPEC = register(
    StageSpec(
        kind="wait_for_scale_down",
        config_model=WaitConfig,
        inputs={"model": InputSlot(ArtifactType.MODEL)},
        outputs={"report": ArtifactType.EVAL_REPORT},
        run=wait_run,
        default_resources=Resources(num_workers=1, cpus_per_worker=0),
        cacheable=False,
    )
)
