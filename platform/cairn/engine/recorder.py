"""What happened to a run, written down: Cairn's database rows, the event log and the step logs.

The scheduler decides; the recorder commits each decision to the database before it is acted on
(a step run is `running` in the database before its task is submitted), so a driver killed at any
point leaves a state that `cairn resume` can continue from. Every event also goes, one line each,
to the run's log files under `$CAIRN_HOME/logs/RUN/`. MLflow is the mirror's business
(`mirror.py`), never this module's.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cairn.artifacts import queries
from cairn.db.models import ArtifactRow, Event, LineageEdge, Run, StepRun, StepRunArtifact, utcnow
from cairn.workflow import Step

# {slot: [{uri, digest, type, metadata, name}]}: a step's inputs as the scheduler resolved them.
Inputs = dict[str, list[dict[str, Any]]]


def store_mlflow_id(sessions: sessionmaker[Session], placeholder: str, real: str) -> None:
    """Replace a placeholder MLflow id in the database by the real one (on the tracker's
    thread, as each id arrives; `BackgroundTracker.on_id`)."""
    with sessions.begin() as s:
        for model in (Run, StepRun):
            s.execute(
                update(model).where(model.mlflow_run_id == placeholder).values(mlflow_run_id=real)
            )


class Recorder:
    """The database rows, events and log lines of one run."""

    def __init__(self, sessions: sessionmaker[Session], run_id: str, log_dir: Path) -> None:
        self.sessions = sessions
        self.run_id = run_id
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- the two primitives --------------------------------------------------------------------
    def event(
        self, s: Session, type_: str, message: str, step_run_id: int | None = None, **data: Any
    ) -> None:
        """An event row in session `s`, and its line in the step's (or the run's) log."""
        s.add(
            Event(
                run_id=self.run_id, step_run_id=step_run_id, type=type_, message=message, data=data
            )
        )
        self.write_log(data.get("step") or "run", f"[{type_}] {message}")

    def log_path(self, step: str) -> Path:
        return self.log_dir / f"{step}.log"

    def write_log(self, step: str, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.log_path(step), "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")

    def step_event(
        self, step: str, step_run_id: int, type_: str, message: str, **data: Any
    ) -> None:
        """An event a running stage reported (`ctx.event`)."""
        with self.sessions.begin() as s:
            self.event(s, type_, f"{step}: {message}", step_run_id, step=step, **data)

    def cluster_events(self, changes: list[dict[str, Any]]) -> None:
        with self.sessions.begin() as s:
            for c in changes:
                self.event(s, c["type"], c["message"], node=c["node"], resources=c["resources"])

    # -- the run -------------------------------------------------------------------------------
    def start_run(self, description: str, resumed_from: str | None) -> tuple[str | None, set[str]]:
        """Mark the run running on this driver; returns its code version and, when it resumes
        another run, the digests that run produced (reusable even by `cache: false` steps)."""
        with self.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.state, run.started_at = "running", utcnow()
            run.driver_host, run.driver_pid, run.heartbeat_at = (
                socket.gethostname(),
                os.getpid(),
                utcnow(),
            )
            self.event(s, "run_started", description)
            reusable = self._outputs_of(s, resumed_from) if resumed_from else set()
            return run.code_version, reusable

    def _outputs_of(self, s: Session, run_id: str) -> set[str]:
        rows = s.scalars(
            select(StepRunArtifact.artifact_digest)
            .join(StepRun, StepRun.id == StepRunArtifact.step_run_id)
            .where(
                StepRun.run_id == run_id,
                StepRunArtifact.role == "output",
                StepRun.state.in_(("succeeded", "cached")),
            )
        )
        return set(rows)

    def set_mlflow_run(self, mlflow_run_id: str) -> None:
        with self.sessions.begin() as s:
            s.get_one(Run, self.run_id).mlflow_run_id = mlflow_run_id

    def heartbeat(self) -> bool:
        """Beat; True when a cancel was requested (recorded once, by the caller's `cancelling`)."""
        with self.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.heartbeat_at = utcnow()
            return bool(run.cancel_requested)

    def cancelling(self) -> None:
        with self.sessions.begin() as s:
            self.event(s, "cancelling", "cancel requested: stopping running steps")

    def finish(self, state: str, error: str | None) -> None:
        with self.sessions.begin() as s:
            run = s.get_one(Run, self.run_id)
            run.state, run.finished_at, run.error = state, utcnow(), error
            self.event(s, "run_finished", f"run {state}" + (f": {error}" if error else ""))

    def mirror_handed_off(self, calls: int, pid: int, log_dir: Path) -> None:
        with self.sessions.begin() as s:
            self.event(
                s,
                "mirror_handed_off",
                f"every step was a cache hit: their {calls} MLflow call(s) are made by process "
                f"{pid} after the run (its log: {log_dir / 'mirror.log'})",
                pid=pid,
                calls=calls,
            )

    def tracking_failed(self, message: str) -> None:
        with self.sessions.begin() as s:
            self.event(s, "tracking_failed", message)

    def resolve_mlflow_ids(self, real_id: Any) -> None:
        """Placeholders the tracker thread resolved before the engine stored them."""
        with self.sessions.begin() as s:
            rows = [
                s.get_one(Run, self.run_id),
                *s.scalars(select(StepRun).where(StepRun.run_id == self.run_id)),
            ]
            for row in rows:
                if row.mlflow_run_id and row.mlflow_run_id.startswith("pending:"):
                    try:
                        row.mlflow_run_id = real_id(row.mlflow_run_id)
                    except KeyError:  # its creation failed: reported as tracking_failed
                        row.mlflow_run_id = None

    # -- sources and the cache -----------------------------------------------------------------
    def source(
        self,
        uri: str,
        text: str,
        digest: str,
        manifest: dict[str, Any],
        license: str | None = None,
    ) -> None:
        """An external input digested where it lies: an artifact row with no producer. The
        licence the workflow states is kept in the row's manifest (outside its file list, so not
        in its digest; the latest statement wins) and in the event. Runs that start together
        digest the same sources at once: the one whose row lands second finds it there."""
        try:
            self._source(uri, text, digest, manifest, license)
        except IntegrityError:  # another run inserted the row since this one looked
            self._source(uri, text, digest, manifest, license)

    def _source(
        self, uri: str, text: str, digest: str, manifest: dict[str, Any], license: str | None
    ) -> None:
        with self.sessions.begin() as s:
            row = s.get(ArtifactRow, digest)
            if row is None:
                s.add(
                    ArtifactRow(
                        digest=digest,
                        type=manifest["type"],
                        uri=uri,
                        manifest=manifest | ({"license": license} if license else {}),
                        size_bytes=sum(f["size"] for f in manifest["files"]),
                        file_count=len(manifest["files"]),
                    )
                )
            elif license and row.manifest.get("license") != license:
                row.manifest = {**row.manifest, "license": license}  # a new dict: JSON is saved
            data: dict[str, Any] = {"uri": uri, "digest": digest}
            if license:
                data["license"] = license
            said = f", licence {license}" if license else ""
            self.event(s, "source", f"source {text} → sha256 {digest[:12]}{said}", **data)

    def cache_corrupt(self, step: str, output: str, digest: str, problems: list[str]) -> None:
        """A cached artifact no longer matches its manifest: never reused again."""
        with self.sessions.begin() as s:
            s.get_one(ArtifactRow, digest).status = "corrupt"
            self.event(
                s,
                "cache_corrupt",
                f"cached {output} {digest[:12]} no longer matches its manifest "
                f"({'; '.join(problems[:5])}): recomputing",
                step=step,
                digest=digest,
                problems=problems,
            )

    def ancestors_compute(self, inputs: Inputs) -> dict[str, Any]:
        """What every artifact above `inputs` cost (`artifacts.queries.ancestors_compute`)."""
        with self.sessions() as s:
            return queries.ancestors_compute(s, [i["digest"] for v in inputs.values() for i in v])

    # -- step runs -----------------------------------------------------------------------------
    def _new_step_run(self, s: Session, step: Step, state: str, **fields: Any) -> StepRun:
        """Insert a step run row (flushed, so it has an id) for `step` in this run."""
        sr = StepRun(
            run_id=self.run_id,
            step=step.name,
            kind=step.kind,
            state=state,
            config=step.config.model_dump(mode="json"),
            resources=step.resources.model_dump(),
            **{"attempt": 1, **fields},
        )
        s.add(sr)
        s.flush()
        return sr

    @staticmethod
    def _artifact(s: Session, a: dict[str, Any], fp: str, name: str, step_run_id: int) -> None:
        """The row of a sealed artifact. Its digest is its content: a step that makes bytes an
        earlier step made (recomputed, or another fingerprint) makes the same artifact, whose row
        keeps its first producer; the step run is linked to it all the same (`_link`). Only a row
        whose copy failed verification takes the new, intact copy's place."""
        m = a["manifest"]
        row = s.get(ArtifactRow, a["digest"])
        if row is not None and row.status == "valid":
            return
        if row is None:
            row = ArtifactRow(digest=a["digest"])
            s.add(row)
        row.type, row.uri, row.fingerprint, row.output_name = a["type"], a["uri"], fp, name
        row.step_run_id, row.manifest, row.status = step_run_id, m, "valid"
        row.size_bytes, row.file_count = sum(f["size"] for f in m["files"]), len(m["files"])

    @staticmethod
    def _has_edge(s: Session, parent: str, child: str, slot: str) -> bool:
        return (
            s.scalar(
                select(LineageEdge.id).where(
                    LineageEdge.parent_digest == parent,
                    LineageEdge.child_digest == child,
                    LineageEdge.slot == slot,
                )
            )
            is not None
        )

    def _link(self, s: Session, sr_id: int, inputs: Inputs, outputs: dict[str, Any]) -> None:
        for slot, items in inputs.items():
            for i in items:
                s.add(
                    StepRunArtifact(
                        step_run_id=sr_id, artifact_digest=i["digest"], role="input", name=slot
                    )
                )
        for name, a in outputs.items():
            s.add(
                StepRunArtifact(
                    step_run_id=sr_id, artifact_digest=a["digest"], role="output", name=name
                )
            )

    def cached(
        self,
        step: Step,
        fp: str,
        inputs: Inputs,
        arts: dict[str, Any],
        mlflow_run_id: str,
        reused: str | None = None,
    ) -> None:
        """A cache hit; `reused`: why the stage judged it still stands (`StageSpec.reusable`)."""
        now = utcnow()
        with self.sessions.begin() as s:
            sr = self._new_step_run(
                s,
                step,
                "cached",
                fingerprint=fp,
                started_at=now,
                finished_at=now,
                mlflow_run_id=mlflow_run_id,
            )
            self._link(s, sr.id, inputs, arts)
            by = _computed_by(s, fp, [a["digest"] for a in arts.values()])
            self.event(
                s,
                "cached",
                f"{step.name}: cache hit, fingerprint {fp[:12]}"
                + (f", computed by run {by}" if by else "")
                + (f"; {reused}" if reused else ""),
                sr.id,
                step=step.name,
                artifacts={k: v["digest"] for k, v in arts.items()},
                **({"computed_by": by} if by else {}),
                **({"reused": reused} if reused else {}),
            )

    def waiting(self, step: str, fp: str, holder: str, holder_step: str) -> None:
        """Another live run holds the step's lease: this run waits for its result."""
        with self.sessions.begin() as s:
            self.event(
                s,
                "waiting",
                f"{step}: run {holder} is computing it (its step {holder_step}, fingerprint "
                f"{fp[:12]}); waiting for its result",
                step=step,
                holder=holder,
            )

    def lease_taken_over(self, step: str, fp: str, dead: str) -> None:
        with self.sessions.begin() as s:
            self.event(
                s,
                "lease_taken_over",
                f"{step}: run {dead}, which was computing it (fingerprint {fp[:12]}), is gone; "
                "computing it here",
                step=step,
                from_run=dead,
            )

    def not_reused(self, step: Step, fp: str, refused: list[tuple[str, str]]) -> None:
        """Cached results the stage refused (`StageSpec.reusable`), and why; an older one may
        still be a hit (the next event says), else the step runs."""
        with self.sessions.begin() as s:
            shown = "; ".join(f"{digest[:12]}: {why}" for digest, why in refused[:3])
            more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
            self.event(
                s,
                "cache_not_reused",
                f"{step.name}: {len(refused)} cached result(s) under fingerprint {fp[:12]} do "
                f"not stand now: {shown}{more}",
                step=step.name,
                fingerprint=fp,
                refused=[{"digest": d, "why": w} for d, w in refused],
            )

    def started(
        self,
        step: Step,
        fp: str,
        attempt: int,
        inputs: Inputs,
        mlflow_run_id: str,
        request: str,
    ) -> int:
        """A step attempt about to be submitted, as `running`; returns its step run id."""
        with self.sessions.begin() as s:
            sr = self._new_step_run(
                s,
                step,
                "running",
                attempt=attempt,
                fingerprint=fp,
                started_at=utcnow(),
                mlflow_run_id=mlflow_run_id,
            )
            self._link(s, sr.id, inputs, {})
            self.event(
                s,
                "step_started",
                f"{step.name}: attempt {attempt} started (fingerprint {fp[:12]}); requests "
                + request,
                sr.id,
                step=step.name,
                attempt=attempt,
                resources=step.resources.model_dump(),
            )
            return sr.id

    def not_started(self, step_run_id: int, error: BaseException) -> None:
        with self.sessions.begin() as s:
            sr = s.get_one(StepRun, step_run_id)
            sr.state, sr.finished_at, sr.error = "failed", utcnow(), f"could not start: {error}"

    def succeeded(
        self,
        step: Step,
        step_run_id: int,
        fp: str,
        inputs: Inputs,
        arts: dict[str, Any],
        placed: dict[str, Any],
        usage: dict[str, Any] | None,
    ) -> None:
        """The step's sealed artifacts, their lineage edges and the step run's end."""
        with self.sessions.begin() as s:
            for name, a in arts.items():
                self._artifact(s, a, fp, name, step_run_id)
            s.flush()
            made = {a["digest"] for a in arts.values()}
            for a in arts.values():
                edges = [(i["digest"], slot) for slot, items in inputs.items() for i in items]
                # An output made from a sibling output (a merged model, from its adapter) has
                # the edge its manifest records (`StageSpec.output_parents`).
                edges += [
                    (p["digest"], str(p.get("slot", "")))
                    for p in (a.get("manifest") or {}).get("parents") or []
                    if p["digest"] in made
                ]
                for parent, slot in edges:
                    if self._has_edge(s, parent, a["digest"], slot):  # the same content again
                        continue
                    s.add(
                        LineageEdge(
                            parent_digest=parent,
                            child_digest=a["digest"],
                            step_run_id=step_run_id,
                            slot=slot,
                        )
                    )
            self._link(s, step_run_id, {}, arts)
            sr = s.get_one(StepRun, step_run_id)
            sr.state, sr.finished_at = "succeeded", utcnow()
            sr.node_id, sr.worker = placed.get("node"), placed.get("worker")
            sr.usage = usage
            self.event(
                s,
                "step_succeeded",
                f"{step.name}: succeeded → "
                + ", ".join(f"{k} {v['digest'][:12]}" for k, v in arts.items()),
                step_run_id,
                step=step.name,
                artifacts={k: v["digest"] for k, v in arts.items()},
            )

    def failed(
        self,
        step: Step,
        step_run_id: int,
        attempt: int,
        state: str,
        message: str,
        detail: str,
        usage: dict[str, Any] | None,
    ) -> None:
        """An attempt that failed or was cancelled; the traceback goes to the step's log."""
        with self.sessions.begin() as s:
            sr = s.get_one(StepRun, step_run_id)
            sr.state, sr.finished_at, sr.error = state, utcnow(), message
            sr.usage = usage
            self.event(
                s,
                f"step_{state}",
                f"{step.name}: attempt {attempt} {state}: {message}",
                step_run_id,
                step=step.name,
                attempt=attempt,
                traceback=detail,
            )
        self.write_log(step.name, detail)

    def retry(self, step: Step, attempt: int) -> None:
        with self.sessions.begin() as s:
            self.event(
                s,
                "retry",
                f"{step.name}: retrying ({attempt} of {step.retries + 1})",
                step=step.name,
                attempt=attempt,
            )

    def unschedulable(self, step: Step, fp: str, why: str) -> None:
        with self.sessions.begin() as s:
            sr = self._new_step_run(
                s, step, "failed", fingerprint=fp, finished_at=utcnow(), error=why
            )
            self.event(s, "step_unschedulable", f"{step.name}: {why}", sr.id, step=step.name)

    def unreadable_input(self, step: Step, why: str) -> None:
        """A step whose inputs could not be read (a source gone, empty or unreachable): failed
        before it started, so it has no fingerprint and no attempt."""
        with self.sessions.begin() as s:
            sr = self._new_step_run(s, step, "failed", finished_at=utcnow(), error=why)
            self.event(s, "step_failed", f"{step.name}: {why}", sr.id, step=step.name)

    def skipped(self, step: Step, why: str) -> None:
        with self.sessions.begin() as s:
            sr = self._new_step_run(s, step, "cancelled", finished_at=utcnow(), error=why)
            self.event(s, "step_cancelled", f"{step.name}: not run ({why})", sr.id, step=step.name)

    def cancelled(self, step: Step, step_run_id: int, why: str) -> None:
        with self.sessions.begin() as s:
            sr = s.get_one(StepRun, step_run_id)
            sr.state, sr.finished_at, sr.error = "cancelled", utcnow(), why
            self.event(
                s, "step_cancelled", f"{step.name}: cancelled ({why})", sr.id, step=step.name
            )


def _computed_by(s: Session, fp: str, digests: list[str]) -> str | None:
    """The run whose step run of `fp` made these artifacts (the first, if several did)."""
    return s.scalar(
        select(StepRun.run_id)
        .join(StepRunArtifact, StepRunArtifact.step_run_id == StepRun.id)
        .where(
            StepRun.fingerprint == fp,
            StepRun.state == "succeeded",
            StepRunArtifact.role == "output",
            StepRunArtifact.artifact_digest.in_(digests),
        )
        .order_by(StepRun.id)
        .limit(1)
    )
