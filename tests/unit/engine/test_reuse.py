"""A kind's `reusable` hook on the engine's cache hits (what the serve stage builds on): asked on
every hit with the config as the run has it now, runtime fields included; a refused result is
not a hit (earlier results of the same fingerprint are tried, newest first), and the run's
events say why a hit was or was not reused."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field
from sqlalchemy import select

from cairn.db.models import Event
from cairn.engine import Engine
from cairn.settings import Settings
from cairn.stage import ArtifactType, InputArtifact, Reuse, Runtime, StageConfig, StageSpec
from cairn.testing import InlineExecutor, MemoryTracker, registered
from cairn.workflow import load_workflow


class LeaseConfig(StageConfig):
    size: int = 1
    mode: Runtime[str] = Field("record", description="what the run asks of the output now")


def lease_run(config, inputs, ctx):
    (ctx.output_path("lease") / "lease.json").write_text(json.dumps({"mode": config.mode}))
    return {"lease": {"mode": config.mode}}


def lease_reusable(config: LeaseConfig, cached: dict[str, InputArtifact]) -> Reuse:
    lease = cached["lease"]
    assert json.loads((lease.path / "lease.json").read_text())["mode"] == lease.metadata["mode"]
    if config.mode == "explode":
        raise RuntimeError("the hook broke")
    if lease.metadata["mode"] != config.mode:
        return Reuse(False, f"made as {lease.metadata['mode']}, asked for {config.mode}")
    return Reuse(True, f"still a {config.mode}")


LEASE = StageSpec(
    kind="toy_lease",
    config_model=LeaseConfig,
    inputs={},
    outputs={"lease": ArtifactType.ENDPOINT},
    run=lease_run,
    reusable=lease_reusable,
)


def run(home: Path, mode: str):
    path = home / "wf" / "lease.yaml"
    path.write_text(
        f"name: lease\nsteps:\n  lease:\n    kind: toy_lease\n    config: {{mode: {mode}}}\n"
    )
    engine = Engine(
        Settings.from_env(home / "cairn"), executor=InlineExecutor(), tracker=MemoryTracker()
    )
    return engine, engine.run(load_workflow(path))


def events(engine: Engine, run_id: str, type_: str) -> list[Event]:
    with engine.sessions() as s:
        return list(
            s.scalars(select(Event).where(Event.run_id == run_id, Event.type == type_)).all()
        )


def test_a_refused_hit_runs_the_step_and_an_earlier_accepted_result_is_reused(home):
    with registered(LEASE):
        _, first = run(home, "record")
        engine, again = run(home, "record")
        live_engine, live = run(home, "live")  # runtime field: same fingerprint, refused
        _, back = run(home, "record")  # the newest is the live one: the first is reused

    assert first.steps["lease"].state == "succeeded"
    assert again.steps["lease"].state == "cached"
    assert again.steps["lease"].artifacts == first.steps["lease"].artifacts
    [hit] = events(engine, again.run_id, "cached")
    assert hit.data["reused"] == "still a record" and "still a record" in hit.message

    assert live.steps["lease"].state == "succeeded"
    assert live.steps["lease"].fingerprint == first.steps["lease"].fingerprint
    assert live.steps["lease"].artifacts["lease"].metadata == {"mode": "live"}
    [refused] = events(live_engine, live.run_id, "cache_not_reused")
    assert refused.data["refused"] == [
        {
            "digest": first.steps["lease"].artifacts["lease"].digest,
            "why": "made as record, asked for live",
        }
    ]
    assert "made as record, asked for live" in refused.message

    assert back.steps["lease"].state == "cached"
    assert back.steps["lease"].artifacts == first.steps["lease"].artifacts
    [skipped] = events(engine, back.run_id, "cache_not_reused")
    assert [r["why"] for r in skipped.data["refused"]] == ["made as live, asked for record"]


def test_a_hook_that_raises_refuses_and_its_traceback_is_logged(home):
    with registered(LEASE):
        run(home, "record")
        engine, result = run(home, "explode")
    assert result.steps["lease"].state == "succeeded"
    [refused] = events(engine, result.run_id, "cache_not_reused")
    assert "reusable() raised RuntimeError: the hook broke" in refused.message
    log = engine.settings.logs_dir(result.run_id) / "lease.log"
    assert "Traceback" in log.read_text() and "the hook broke" in log.read_text()
