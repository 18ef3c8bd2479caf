"""Read-only views of Cairn's state: run status, run lists, logs and lineage, as plain dicts.

The CLI renders these as tables or `--json`; the Python API returns them as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from cairn.accounting import add
from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, StepRunArtifact
from cairn.errors import CairnError


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    if a is None:
        return None
    a = a if a.tzinfo else a.replace(tzinfo=UTC)
    b = (b if b.tzinfo else b.replace(tzinfo=UTC)) if b else datetime.now(UTC)
    return round((b - a).total_seconds(), 3)


def run_status(s: Any, run_id: str, driver_alive: bool | None = None) -> dict[str, Any]:
    run = s.get(Run, run_id)
    if run is None:
        raise CairnError(
            f"no run {run_id}: `cairn runs` lists the runs in this CAIRN_HOME/database"
        )
    steps = []
    for sr in s.scalars(select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)):
        outs = {
            a.name: {"digest": a.artifact_digest}
            for a in s.scalars(
                select(StepRunArtifact).where(
                    StepRunArtifact.step_run_id == sr.id, StepRunArtifact.role == "output"
                )
            )
        }
        for name, o in outs.items():
            row = s.get(ArtifactRow, o["digest"])
            outs[name] = {"digest": row.digest, "uri": row.uri, "type": row.type}
        steps.append(
            {
                "step": sr.step,
                "kind": sr.kind,
                "attempt": sr.attempt,
                "state": sr.state,
                "fingerprint": sr.fingerprint,
                "started_at": _iso(sr.started_at),
                "seconds": _seconds(sr.started_at, sr.finished_at),
                "node": sr.node_id,
                "worker": sr.worker,
                "resources": sr.resources,
                "error": sr.error,
                "artifacts": outs,
                "usage": sr.usage,
            }
        )
    events = [
        {"ts": _iso(e.ts), "type": e.type, "message": e.message}
        for e in s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id))
    ]
    return {
        "run_id": run.id,
        "workflow": run.workflow_name,
        "workflow_path": run.workflow_path,
        "status": run.state,
        "created_at": _iso(run.created_at),
        "seconds": _seconds(run.started_at, run.finished_at),
        "resumed_from": run.resumed_from,
        "code_version": run.code_version,
        "ray_address": run.ray_address,
        "mlflow_run_id": run.mlflow_run_id,
        "driver": f"{run.driver_host}:{run.driver_pid}" if run.driver_host else None,
        "driver_alive": driver_alive,
        "error": run.error,
        "steps": steps,
        "compute": compute_by_kind(steps),
        "events": events,
    }


def compute_by_kind(steps: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Compute totals per stage kind over every attempt (failed attempts cost too)."""
    totals: dict[str, dict[str, float]] = {}
    for st in steps:
        if st.get("usage"):
            add(totals.setdefault(st["kind"], {}), st["usage"])
    return totals


def list_runs(s: Any, limit: int = 20) -> list[dict[str, Any]]:
    rows = s.scalars(select(Run).order_by(Run.created_at.desc()).limit(limit))
    return [
        {
            "run_id": r.id,
            "workflow": r.workflow_name,
            "status": r.state,
            "created_at": _iso(r.created_at),
            "seconds": _seconds(r.started_at, r.finished_at),
            "resumed_from": r.resumed_from,
        }
        for r in rows
    ]


def lineage(s: Any, digest: str) -> dict[str, Any]:
    """The ancestry of an artifact (a digest or a unique prefix of one) as a nested dict."""
    rows = s.scalars(select(ArtifactRow).where(ArtifactRow.digest.startswith(digest))).all()
    if not rows:
        raise CairnError(f"no artifact with digest {digest}: `cairn status RUN` shows digests")
    if len(rows) > 1:
        raise CairnError(
            f"digest prefix {digest} is ambiguous ({len(rows)} artifacts): give more of it"
        )

    def node(row: ArtifactRow, seen: frozenset[str]) -> dict[str, Any]:
        sr = s.get(StepRun, row.step_run_id) if row.step_run_id else None
        out: dict[str, Any] = {
            "digest": row.digest,
            "type": row.type,
            "uri": row.uri,
            "step": sr.step if sr else None,
            "kind": sr.kind if sr else None,
            "run_id": sr.run_id if sr else None,
            "status": row.status,
            "parents": [],
        }
        if row.digest in seen:
            return out
        for edge in s.scalars(
            select(LineageEdge)
            .where(LineageEdge.child_digest == row.digest)
            .order_by(LineageEdge.id)
        ):
            parent = s.get(ArtifactRow, edge.parent_digest)
            out["parents"].append({"slot": edge.slot, **node(parent, seen | {row.digest})})
        return out

    return node(rows[0], frozenset())
