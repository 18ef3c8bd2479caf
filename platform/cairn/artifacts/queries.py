"""Lineage as Cairn's database records it: an artifact's ancestry, and what its ancestors cost.

The graph itself is the `lineage_edges` table (parent artifact → child artifact, through the step
run that made the child), written by the engine as each step succeeds; these are its readers.
The same graph can be rebuilt without the database from sealed manifests (`ancestry.walk`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn.db.models import ArtifactRow, LineageEdge, StepRun
from cairn.errors import CairnError
from cairn.results import LineageNode
from cairn.stage.usage import add


def find_artifacts(s: Session, prefix: str, types: tuple[str, ...] = ()) -> list[ArtifactRow]:
    """Artifacts whose digest starts with `prefix` (of `types`, if given)."""
    query = select(ArtifactRow).where(ArtifactRow.digest.startswith(prefix))
    if types:
        query = query.where(ArtifactRow.type.in_(types))
    return list(s.scalars(query))


def lineage(s: Session, digest: str) -> LineageNode:
    """The ancestry of an artifact (a digest or a unique prefix of one), back to raw sources."""
    rows = find_artifacts(s, digest)
    if not rows:
        raise CairnError(f"no artifact with digest {digest}: `cairn status RUN` shows digests")
    if len(rows) > 1:
        raise CairnError(
            f"digest prefix {digest} is ambiguous ({len(rows)} artifacts): give more of it"
        )

    def node(row: ArtifactRow, slot: str | None, seen: frozenset[str]) -> LineageNode:
        sr = s.get(StepRun, row.step_run_id) if row.step_run_id else None
        out = LineageNode(
            digest=row.digest,
            type=row.type,
            uri=row.uri,
            step=sr.step if sr else None,
            kind=sr.kind if sr else None,
            run_id=sr.run_id if sr else None,
            status=row.status,
            slot=slot,
        )
        if row.digest in seen:
            return out
        for edge in s.scalars(
            select(LineageEdge)
            .where(LineageEdge.child_digest == row.digest)
            .order_by(LineageEdge.id)
        ):
            parent = s.get_one(ArtifactRow, edge.parent_digest)
            out.parents.append(node(parent, edge.slot, seen | {row.digest}))
        return out

    return node(rows[0], None, frozenset())


def ancestors_compute(s: Session, digests: list[str]) -> dict[str, Any]:
    """{digest: {run_id, step, kind, attempts, usage}} for every artifact at or above `digests`;
    usage sums every attempt of the producing step in its run up to the one that produced it,
    because failed attempts cost compute too. Sources (no producing step) are left out."""
    out: dict[str, Any] = {}
    todo = list(digests)
    while todo:
        digest = todo.pop()
        row = s.get(ArtifactRow, digest)
        if digest in out or row is None:
            continue
        out[digest] = None
        todo.extend(
            s.scalars(select(LineageEdge.parent_digest).where(LineageEdge.child_digest == digest))
        )
        made = s.get(StepRun, row.step_run_id) if row.step_run_id else None
        if made is None:
            continue
        attempts = s.scalars(
            select(StepRun).where(
                StepRun.run_id == made.run_id,
                StepRun.step == made.step,
                StepRun.attempt <= made.attempt,
            )
        ).all()
        totals: dict[str, float] = {}
        for a in attempts:
            add(totals, a.usage)
        out[digest] = {
            "run_id": made.run_id,
            "step": made.step,
            "kind": made.kind,
            "attempts": len(attempts),
            "usage": totals,
        }
    return {k: v for k, v in out.items() if v is not None}
