"""The stage SDK: everything a stage kind is written against, and nothing of the engine.

    from cairn.stage import ArtifactType, Context, InputSlot, StageConfig, StageSpec, register

    class CountConfig(StageConfig):
        factor: int = 1
        note: Runtime[str] = ""          # does not change the result: not in the fingerprint

    def run(config: CountConfig, inputs: Inputs, ctx: Context) -> Outputs:
        out = ctx.output_path("dataset")
        ...
        return {"dataset": {"documents": n}}

    SPEC = register(StageSpec(kind="count", config_model=CountConfig, run=run,
                              inputs={"sources": InputSlot(ArtifactType.RAW, many=True)},
                              outputs={"dataset": ArtifactType.DATASET}))

Stage code imports this package and Cairn's leaf modules (`cairn.errors`), never the engine,
the database, MLflow or the workflow loader; import-linter holds that line in `make check`.
Submodules a stage may also use: `raytrain` (the shared Ray Train launcher), `usage` (compute
meters for workers), `files` (hashing), `plots` (loss curves), `lineage` (its inputs' ancestry).
"""

from __future__ import annotations

from cairn.stage.artifacts import ArtifactType, InputArtifact
from cairn.stage.context import Context, Inputs, Outputs, RunFn
from cairn.stage.lineage import Ancestor, Ancestry
from cairn.stage.registry import lookup, register, registered, unregister
from cairn.stage.resources import Resources
from cairn.stage.spec import (
    InputSlot,
    Launcher,
    Reuse,
    Runtime,
    StageConfig,
    StageSpec,
    TrainerConfig,
    package_version,
)

__all__ = [
    "Ancestor",
    "Ancestry",
    "ArtifactType",
    "Context",
    "InputArtifact",
    "InputSlot",
    "Inputs",
    "Launcher",
    "Outputs",
    "Resources",
    "Reuse",
    "RunFn",
    "Runtime",
    "StageConfig",
    "StageSpec",
    "TrainerConfig",
    "lookup",
    "package_version",
    "register",
    "registered",
    "unregister",
]
