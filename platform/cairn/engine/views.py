"""Read-only views of Cairn's state for the public API: a run's status, the list of runs.

They read Cairn's database and return the typed results of `cairn.results`; the CLI renders
those as tables or `--json`, and a server would return the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cairn.db.models import ArtifactRow, Event, Run, StepRun, StepRunArtifact
from cairn.errors import NotFound
from cairn.results import Artifact, Attempt, RunStatus, RunSummary
from cairn.results import Event as EventRecord
from cairn.stage.usage import add


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    """Seconds from `a` to `b` (or to now, while it runs); None if it never started."""
    if a is None:
        return None
    a = a if a.tzinfo else a.replace(tzinfo=UTC)
    b = (b if b.tzinfo else b.replace(tzinfo=UTC)) if b else datetime.now(UTC)
    return round((b - a).total_seconds(), 3)


def run_status(s: Session, run_id: str, driver_alive: bool | None = None) -> RunStatus:
    run = s.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}: `cairn runs` lists the runs in this CAIRN_HOME/database")
    steps = []
    for sr in s.scalars(select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)):
        outs: dict[str, Artifact] = {}
        for link in s.scalars(
            select(StepRunArtifact).where(
                StepRunArtifact.step_run_id == sr.id, StepRunArtifact.role == "output"
            )
        ):
            row = s.get_one(ArtifactRow, link.artifact_digest)
            outs[link.name] = Artifact(row.digest, row.uri, row.type)
        steps.append(
            Attempt(
                step=sr.step,
                kind=sr.kind,
                attempt=sr.attempt,
                state=sr.state,
                fingerprint=sr.fingerprint,
                started_at=iso(sr.started_at),
                seconds=seconds_between(sr.started_at, sr.finished_at),
                node=sr.node_id,
                worker=sr.worker,
                resources=sr.resources,
                error=sr.error,
                artifacts=outs,
                usage=sr.usage,
            )
        )
    events = [
        EventRecord(iso(e.ts), e.type, e.message)
        for e in s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id))
    ]
    return RunStatus(
        run_id=run.id,
        workflow=run.workflow_name,
        workflow_path=run.workflow_path,
        state=run.state,
        created_at=iso(run.created_at),
        seconds=seconds_between(run.started_at, run.finished_at),
        resumed_from=run.resumed_from,
        code_version=run.code_version,
        ray_address=run.ray_address,
        mlflow_run_id=run.mlflow_run_id,
        driver=f"{run.driver_host}:{run.driver_pid}" if run.driver_host else None,
        driver_alive=driver_alive,
        error=run.error,
        owner=run.owner,
        steps=steps,
        compute=compute_by_kind(steps),
        events=events,
    )


def compute_by_kind(steps: list[Attempt]) -> dict[str, dict[str, float]]:
    """Compute totals per stage kind over every attempt (failed attempts cost too)."""
    totals: dict[str, dict[str, float]] = {}
    for st in steps:
        if st.usage:
            add(totals.setdefault(st.kind, {}), st.usage)
    return totals


def list_runs(
    s: Session,
    limit: int = 20,
    *,
    offset: int = 0,
    state: str | None = None,
    workflow: str | None = None,
    owner: str | None = None,
) -> list[RunSummary]:
    """A page of runs, newest first, with each one's step and cache-hit counts.

    Two indexed queries whatever the number of runs: the page (ix_runs_created_at), then the
    step counts of that page's runs only (ix_step_runs_run_id)."""
    q = select(Run).order_by(Run.created_at.desc(), Run.id.desc())
    if state:
        q = q.where(Run.state == state)
    if workflow:
        q = q.where(Run.workflow_name == workflow)
    if owner:
        q = q.where(Run.owner == owner)
    rows = list(s.scalars(q.limit(limit).offset(offset)))
    counts: dict[str, tuple[int, int]] = {}
    if rows:
        for run_id, steps, hits in s.execute(
            select(
                StepRun.run_id,
                func.count(func.distinct(StepRun.step)),
                func.count(case((StepRun.state == "cached", 1))),
            )
            .where(StepRun.run_id.in_([r.id for r in rows]))
            .group_by(StepRun.run_id)
        ):
            counts[run_id] = (steps, hits)
    return [
        RunSummary(
            run_id=r.id,
            workflow=r.workflow_name,
            state=r.state,
            created_at=iso(r.created_at),
            seconds=seconds_between(r.started_at, r.finished_at),
            resumed_from=r.resumed_from,
            owner=r.owner,
            steps=counts.get(r.id, (0, 0))[0],
            cache_hits=counts.get(r.id, (0, 0))[1],
        )
        for r in rows
    ]


def step_detail(s: Session, run_id: str, step: str) -> dict[str, Any]:
    """One step of a run as its page shows it: the last attempt's config, resources and
    fingerprint, the artifacts it read (by input slot), its MLflow run, and, for a cache hit,
    the step run that made what it reused (where that step's metrics are)."""
    attempts = list(
        s.scalars(
            select(StepRun)
            .where(StepRun.run_id == run_id, StepRun.step == step)
            .order_by(StepRun.attempt)
        )
    )
    if not attempts:
        if s.get(Run, run_id) is None:
            raise NotFound(f"no run {run_id}: see `cairn runs`")
        raise NotFound(f"step {step} of run {run_id} has not started (or the run has no such step)")
    last = attempts[-1]
    inputs: dict[str, list[dict[str, Any]]] = {}
    made_by = None
    for link, row in s.execute(
        select(StepRunArtifact, ArtifactRow)
        .join(ArtifactRow, StepRunArtifact.artifact_digest == ArtifactRow.digest)
        .where(StepRunArtifact.step_run_id == last.id)
        .order_by(StepRunArtifact.id)
    ):
        if link.role == "input":
            inputs.setdefault(link.name, []).append(
                {"digest": row.digest, "type": row.type, "uri": row.uri}
            )
        elif last.state == "cached" and made_by is None and row.step_run_id is not None:
            maker = s.get_one(StepRun, row.step_run_id)
            made_by = {
                "run_id": maker.run_id,
                "step": maker.step,
                "attempt": maker.attempt,
                "mlflow_run_id": maker.mlflow_run_id,
            }
    return {
        "run_id": run_id,
        "step": step,
        "kind": last.kind,
        "attempt": last.attempt,
        "state": last.state,
        "fingerprint": last.fingerprint,
        "config": last.config,
        "resources": last.resources,
        "inputs": inputs,
        "mlflow_run_id": last.mlflow_run_id,
        "made_by": made_by,
    }


def ray_address(s: Session, run_id: str) -> str | None:
    """The Ray cluster a submitted run went to (None for a local run); an error if no run."""
    run = s.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}: see `cairn runs`")
    return run.ray_address


__all__ = ["compute_by_kind", "list_runs", "ray_address", "run_status", "step_detail"]
