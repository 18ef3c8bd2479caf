"""A step's cache hit: earlier artifacts of its fingerprint that are intact and that its stage
still accepts, or none (the step runs).

The artifacts of a fingerprint are the step's result wherever it ran, so an intact one is a hit:
the first one made (a fingerprint's canonical result), so that recomputing a step (`cache:
false`, a test's or a user's) on a machine where it is not bit-identical does not shift what
every later run's downstream steps read and recompute them all. An
artifact whose files no longer match its manifest never is a hit (it is marked corrupt).
A kind whose output describes something outside the store (serve's kept server) is asked too,
through `StageSpec.reusable`, with the step's config as this run has it: an earlier result may
no longer stand (the server is gone) or not be what this run asks for (a stopped server's
record, when the run keeps its server). Its earlier results are then tried, newest first, and
the run's events say why each refused one was passed over and why the hit stands.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cairn.artifacts.store import ArtifactStore
from cairn.db.models import ArtifactRow, StepRun, StepRunArtifact
from cairn.engine.progress import Display
from cairn.engine.recorder import Recorder
from cairn.stage import ArtifactType, InputArtifact, Reuse
from cairn.workflow import Step

# The earlier results of one fingerprint a kind with `reusable` is asked about, newest first.
MAX_CANDIDATES = 10


@dataclass(frozen=True)
class Hit:
    """The step's outputs from the cache ({name: {uri, digest, type, metadata}}), and, where the
    stage judged them, why they stand."""

    artifacts: dict[str, dict[str, Any]]
    reused: str | None = None


def lookup(
    step: Step,
    fp: str,
    recorder: Recorder,
    store: ArtifactStore,
    display: Display,
    resumed: set[str],
) -> Hit | None:
    """The hit for `step` under fingerprint `fp`, or None. A `cache: false` step takes only what
    the run it resumes made (`resumed`: those digests)."""
    if not step.spec.cacheable:
        return None
    judged = step.spec.reusable is not None
    made = set(step.spec.outputs_for(step.config))  # an optional output only where configured
    sets = [c for c in candidates(recorder.sessions, fp, newest_first=judged) if set(c) == made]
    if not step.cache:
        sets = [c for c in sets if all(r.digest in resumed for r in c.values())]
    refused: list[tuple[str, str]] = []
    for rows in sets[:MAX_CANDIDATES] if judged else sets[:1]:
        found = {
            name: {
                "uri": r.uri,
                "digest": r.digest,
                "type": r.type,
                "metadata": r.manifest.get("metadata", {}),
            }
            for name, r in rows.items()
        }
        verdict = _judge(step, found, recorder, store) if judged else None
        if verdict is not None and not verdict.ok:
            refused.append((",".join(a["digest"] for a in found.values()), verdict.why))
            continue
        if refused:  # newer results passed over: said before the hit is
            recorder.not_reused(step, fp, refused)
        for name, r in rows.items():
            display.update(step.name, state="verifying", message=f"verifying cached {name}")
            problems = store.verify(r.uri, r.digest)
            if problems:
                recorder.cache_corrupt(step.name, name, r.digest, problems)
                return None
        return Hit(found, verdict.why if verdict else None)
    if refused:
        recorder.not_reused(step, fp, refused)
    return None


def candidates(
    sessions: sessionmaker[Session], fp: str, newest_first: bool = True
) -> list[dict[str, ArtifactRow]]:
    """The valid artifacts computed under `fp`, by output name: first the newest (or, with
    `newest_first=False`, the first made) of each output, then each other step run's own
    outputs in the same order (for a kind that may refuse one: the newest is the live one).
    Found through the step runs that computed them, not the artifact rows: an artifact is its
    content, and identical content may have been made first under another fingerprint."""
    order = StepRun.id.desc() if newest_first else StepRun.id.asc()
    with sessions() as s:
        found = s.execute(
            select(ArtifactRow, StepRunArtifact.name, StepRun.id)
            .join(StepRunArtifact, StepRunArtifact.artifact_digest == ArtifactRow.digest)
            .join(StepRun, StepRun.id == StepRunArtifact.step_run_id)
            .where(
                StepRun.fingerprint == fp,
                StepRun.state == "succeeded",
                StepRunArtifact.role == "output",
                ArtifactRow.status == "valid",
            )
            .order_by(order)
        ).all()
    latest: dict[str, ArtifactRow] = {}
    by_step_run: dict[int, dict[str, ArtifactRow]] = {}
    for row, name, step_run in found:
        latest.setdefault(name, row)
        by_step_run.setdefault(step_run, {}).setdefault(name, row)
    earlier = [g for g in by_step_run.values() if g != latest]
    return [latest, *earlier] if latest else []


def _judge(
    step: Step, found: dict[str, dict[str, Any]], recorder: Recorder, store: ArtifactStore
) -> Reuse:
    """The stage's `reusable` on cached outputs. A hook that raises refuses (its traceback goes
    to the step's log): a bug in it costs a re-run, never a stale result."""
    assert step.spec.reusable is not None
    cached = {
        name: InputArtifact(
            path=store.local_path(a["uri"], a["digest"]),
            type=ArtifactType(a["type"]),
            digest=a["digest"],
            metadata=a["metadata"],
            name=f"{step.name}.{name}",
            uri=a["uri"],
        )
        for name, a in found.items()
    }
    try:
        return step.spec.reusable(step.config, cached)
    except Exception as ex:
        recorder.write_log(step.name, "".join(traceback.format_exception(ex)))
        return Reuse(False, f"the stage's reusable() raised {type(ex).__name__}: {ex}")
