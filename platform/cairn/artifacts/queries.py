"""Lineage as Cairn's database records it: an artifact's ancestry, and what its ancestors cost.

The graph itself is the `lineage_edges` table (parent artifact → child artifact, through the step
run that made the child), written by the engine as each step succeeds; these are its readers.
The same graph can be rebuilt without the database from sealed manifests (`ancestry.walk`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cairn.db.models import ArtifactRow, LineageEdge, StepRun, StepRunArtifact
from cairn.errors import CairnError, NotFound
from cairn.stage.usage import add


def find_artifacts(s: Session, prefix: str, types: tuple[str, ...] = ()) -> list[ArtifactRow]:
    """Artifacts whose digest starts with `prefix` (of `types`, if given)."""
    query = select(ArtifactRow).where(ArtifactRow.digest.startswith(prefix))
    if types:
        query = query.where(ArtifactRow.type.in_(types))
    return list(s.scalars(query))


def one_artifact(s: Session, ref: str) -> ArtifactRow:
    """The artifact whose digest is `ref` or starts with it (a clear error if none or several)."""
    rows = find_artifacts(s, ref)
    if not rows:
        raise NotFound(f"no artifact with digest {ref}: `cairn status RUN` shows digests")
    if len(rows) > 1:
        raise CairnError(
            f"digest prefix {ref} is ambiguous ({len(rows)} artifacts): give more of it"
        )
    return rows[0]


def graph(
    s: Session, ref: str, direction: str = "ancestors", limit: int = 20_000
) -> tuple[str, list[dict[str, Any]], list[dict[str, str]]]:
    """(root digest, nodes, edges) of an artifact's ancestors (back to raw sources) or its
    descendants (everything made from it), as flat lists in the shape of `graphs.flatten`.

    One query per level of the graph and one per batch of nodes, not one per node: a lineage of
    thousands of artifacts stays a handful of round trips to PostgreSQL."""
    root = one_artifact(s, ref).digest
    near = LineageEdge.child_digest if direction == "ancestors" else LineageEdge.parent_digest
    seen, frontier, order = {root}, [root], [root]
    edges: list[dict[str, str]] = []
    while frontier and len(seen) < limit:
        found = [
            edge
            for i in range(0, len(frontier), 500)
            for edge in s.execute(
                select(LineageEdge.parent_digest, LineageEdge.child_digest, LineageEdge.slot)
                .where(near.in_(frontier[i : i + 500]))
                .order_by(LineageEdge.id)
            )
        ]
        frontier = []
        for parent, child, slot in found:
            edges.append({"parent": parent, "child": child, "slot": slot})
            other = parent if direction == "ancestors" else child
            if other not in seen:
                seen.add(other)
                frontier.append(other)
                order.append(other)
    found_nodes: dict[str, dict[str, Any]] = {}
    for i in range(0, len(order), 500):
        rows = s.execute(
            select(ArtifactRow, StepRun)
            .outerjoin(StepRun, ArtifactRow.step_run_id == StepRun.id)
            .where(ArtifactRow.digest.in_(order[i : i + 500]))
        ).all()
        for row, sr in rows:
            found_nodes[row.digest] = {
                "digest": row.digest,
                "type": row.type,
                "uri": row.uri,
                "step": sr.step if sr else None,
                "kind": sr.kind if sr else None,
                "run_id": sr.run_id if sr else None,
                "status": row.status,
                # A source's licence, as the workflow stated it (`Recorder.source`).
                **({"license": row.manifest["license"]} if row.manifest.get("license") else {}),
            }
    return root, [found_nodes[d] for d in order], edges


def where_used(s: Session, digest: str) -> list[dict[str, Any]]:
    """Every step run that read or produced the artifact (a cache hit 'produces' it again)."""
    rows = s.execute(
        select(StepRunArtifact, StepRun)
        .join(StepRun, StepRunArtifact.step_run_id == StepRun.id)
        .where(StepRunArtifact.artifact_digest == digest)
        .order_by(StepRun.id)
    ).all()
    return [
        {
            "run_id": sr.run_id,
            "step": sr.step,
            "kind": sr.kind,
            "attempt": sr.attempt,
            "state": sr.state,
            "role": link.role,
            "name": link.name,
        }
        for link, sr in rows
    ]


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
