"""Outputs a step makes only when its config asks (`StageSpec.optional_outputs`) and outputs made
from sibling outputs (`StageSpec.output_parents`), through the engine on its shipped fakes: what
must be written, what a cache hit must have, and the parent link in the manifest that the
ancestry walks (post-training's `adapter` and the merged `model` made from it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import Field
from sqlalchemy import select

from cairn.artifacts.ancestry import walk
from cairn.db.models import LineageEdge
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.stage import ArtifactType, InputSlot, StageConfig, StageSpec, register
from cairn.testing import InlineExecutor, MemoryTracker
from cairn.workflow import load_workflow


class MergeConfig(StageConfig):
    extra: dict[str, int] | None = Field(None, description="make the `extra` output too")
    forget: bool = Field(False, description="a buggy stage: skip writing `extra`")


def merge_run(config, inputs, ctx):
    lines = sum(len(p.read_text().splitlines()) for p in sorted(inputs["data"].path.rglob("*")))
    out = {"main": {"lines": lines}}
    if config.extra is not None and not config.forget:
        (ctx.output_path("extra") / "delta.json").write_text(json.dumps(config.extra))
        out["extra"] = {"delta": config.extra}
    (ctx.output_path("main") / "main.json").write_text(json.dumps({"lines": lines}))
    return out


SPEC = register(
    StageSpec(
        kind="toy_merge",
        config_model=MergeConfig,
        inputs={"data": InputSlot(ArtifactType.RAW)},
        outputs={"main": ArtifactType.MODEL, "extra": ArtifactType.ADAPTER},
        optional_outputs={"extra": "extra"},
        output_parents={"main": ("extra",)},
        run=merge_run,
    )
)

WF = """
name: merge
steps:
  step:
    kind: toy_merge
    inputs: {{data: ./data}}
    config: {config}
"""


def run(home: Path, config: str):  # type: ignore[no-untyped-def]
    path = home / "wf" / "merge.yaml"
    path.write_text(WF.format(config=config))
    engine = Engine(
        Settings.from_env(home / "cairn"), executor=InlineExecutor(), tracker=MemoryTracker()
    )
    return engine.run(load_workflow(path))


def test_outputs_for_leaves_out_an_unset_optional_output() -> None:
    assert SPEC.outputs_for(MergeConfig()) == {"main": ArtifactType.MODEL}
    assert SPEC.outputs_for(MergeConfig(extra={"r": 1})) == SPEC.outputs


def test_a_spec_that_names_unknown_outputs_or_fields_is_refused() -> None:
    base = dict(
        kind="toy_bad",
        config_model=MergeConfig,
        inputs={},
        outputs={"main": ArtifactType.MODEL, "extra": ArtifactType.ADAPTER},
        run=merge_run,
    )
    with pytest.raises(ValueError, match="optional output 'nope' is not one of its outputs"):
        StageSpec(**base, optional_outputs={"nope": "extra"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="config field 'lora', which MergeConfig lacks"):
        StageSpec(**base, optional_outputs={"extra": "lora"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="names 'other', which is not one of its outputs"):
        StageSpec(**base, output_parents={"main": ("other",)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep it to one level"):
        StageSpec(**base, output_parents={"main": ("extra",), "extra": ("main",)})  # type: ignore[arg-type]


def test_without_the_setting_only_the_other_outputs_are_sealed_and_cached(home: Path) -> None:
    first = run(home, "{}")
    assert first.state == "succeeded", first.steps["step"].error
    assert set(first.steps["step"].artifacts) == {"main"}
    again = run(home, "{}")
    assert again.steps["step"].state == "cached"
    assert set(again.steps["step"].artifacts) == {"main"}


def test_a_made_from_output_names_its_sibling_as_a_parent(home: Path) -> None:
    first = run(home, "{extra: {r: 4}}")
    assert first.state == "succeeded", first.steps["step"].error
    arts = first.steps["step"].artifacts
    assert set(arts) == {"main", "extra"}
    main = json.loads((Path(arts["main"].uri) / "manifest.json").read_text())
    sibling = [p for p in main["parents"] if p["slot"] == "extra"]
    assert [(p["digest"], p["type"], p["name"]) for p in sibling] == [
        (arts["extra"].digest, "adapter", "step.extra")
    ]
    # The ancestry reaches the sibling through that link, checked against its manifest digest.
    graph = walk([(arts["main"].uri, arts["main"].digest)])
    assert arts["extra"].digest in graph
    assert graph[arts["extra"].digest].type == "adapter"
    extra = json.loads((Path(arts["extra"].uri) / "manifest.json").read_text())
    assert all(p["slot"] != "extra" for p in extra["parents"])  # the sibling is made first
    # The database's lineage has the same edge.
    engine = Engine(Settings.from_env(home / "cairn"), executor=InlineExecutor())
    with engine.sessions() as s:
        edges = s.scalars(
            select(LineageEdge).where(LineageEdge.child_digest == arts["main"].digest)
        ).all()
    assert (arts["extra"].digest, "extra") in {(e.parent_digest, e.slot) for e in edges}
    # A cache hit must have both outputs, and hands on both.
    again = run(home, "{extra: {r: 4}}")
    assert again.steps["step"].state == "cached"
    assert {k: a.digest for k, a in again.steps["step"].artifacts.items()} == {
        k: a.digest for k, a in arts.items()
    }


def test_a_configured_optional_output_must_be_written(home: Path) -> None:
    result = run(home, "{extra: {r: 4}, forget: true}")
    assert result.state == "failed"
    assert "finished without writing its output 'extra'" in str(result.steps["step"].error)
