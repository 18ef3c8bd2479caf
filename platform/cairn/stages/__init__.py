"""The registry of stage kinds: one explicit dict, no entry-point scanning.

To add a kind, write `cairn/stages/<kind>.py` exposing `SPEC: StageSpec` and add it below.
"""

from __future__ import annotations

from cairn.stages.base import ArtifactType, InputArtifact, InputSlot, Resources, StageSpec

_KINDS = {
    "curate": "cairn.stages.curate",
    "pretrain": "cairn.stages.pretrain",
    "sft": "cairn.stages.posttrain.sft",
    "dpo": "cairn.stages.posttrain.dpo",
    "evaluate": "cairn.stages.evaluate",
    "serve": "cairn.stages.serve",
    "release": "cairn.stages.release",
}


def get(kind: str, module: str | None = None) -> StageSpec:
    """The spec of one kind, importing only its module (or `module`, where a worker is told
    which module the driver took the kind from)."""
    import importlib

    mod = importlib.import_module(module or _KINDS[kind])
    spec = getattr(mod, "SPEC", None)
    if isinstance(spec, StageSpec) and spec.kind == kind:
        return spec
    for value in vars(mod).values():
        if isinstance(value, StageSpec) and value.kind == kind:
            return value
    raise KeyError(f"module {mod.__name__} defines no stage kind '{kind}'")


def kinds() -> list[str]:
    return list(_KINDS)


__all__ = ["ArtifactType", "InputArtifact", "InputSlot", "Resources", "StageSpec", "get", "kinds"]
