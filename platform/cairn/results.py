"""What the public API returns: runs, steps, artifacts, events, logs, lineage and audits, typed.

A leaf module (it imports nothing else of Cairn), so the engine that fills these in, the CLI that
renders them, and a client that reads them back from a server's JSON all share one definition.
Each type's `to_dict()` is the shape `--json` prints; `from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A run's and a step's states. Terminal: the last four (and `cached` for a step).
STATES = ("pending", "running", "succeeded", "failed", "cancelled", "cached")


@dataclass(frozen=True)
class Artifact:
    """A sealed, immutable output (or a digested source): its digest, where it lies, its type
    (`dataset`, `model`, `eval_report`, `release`, ...) and what its stage said about it."""

    digest: str
    uri: str
    type: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "uri": self.uri,
            "type": self.type,
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(d["digest"], d.get("uri", ""), d.get("type", ""), d.get("metadata") or {})

    @property
    def bundle(self) -> str | None:
        """A release artifact's bundle directory (what `cairn audit` checks), else None."""
        name = self.metadata.get("bundle") if self.type == "release" else None
        return f"{self.uri.rstrip('/')}/{name}" if name else None


@dataclass
class StepResult:
    """How one step of a run ended: its state, fingerprint, attempts and output artifacts."""

    step: str
    kind: str
    state: str = "pending"
    fingerprint: str | None = None
    attempts: int = 0
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "fingerprint": self.fingerprint,
            "attempts": self.attempts,
            "error": self.error,
            "artifacts": {k: a.to_dict() for k, a in self.artifacts.items()},
        }


@dataclass
class RunResult:
    """How a run ended (`cairn.run`, `cairn.resume`): its state and every step's result."""

    run_id: str
    state: str
    steps: dict[str, StepResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "succeeded"

    def artifacts(self, type_: str | None = None) -> list[Artifact]:
        """Every output of the run (of one type), in step order."""
        return [
            a
            for r in self.steps.values()
            for a in r.artifacts.values()
            if type_ is None or a.type == type_
        ]

    @property
    def releases(self) -> list[str]:
        """The bundle directories of the run's releases."""
        return [b for a in self.artifacts("release") if (b := a.bundle)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.state,
            "error": self.error,
            "steps": {name: r.to_dict() for name, r in self.steps.items()},
        }


@dataclass(frozen=True)
class Event:
    """One entry of a run's event log (the audit trail): when, what, and a message."""

    ts: str | None
    type: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"ts": self.ts, "type": self.type, "message": self.message}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(d.get("ts"), d["type"], d["message"])


@dataclass(frozen=True)
class Attempt:
    """One attempt of one step, as recorded: state, timing, placement, outputs, compute used."""

    step: str
    kind: str
    attempt: int
    state: str
    fingerprint: str | None
    started_at: str | None
    seconds: float | None
    node: str | None
    worker: str | None
    resources: dict[str, Any]
    error: str | None
    artifacts: dict[str, Artifact]
    usage: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "kind": self.kind,
            "attempt": self.attempt,
            "state": self.state,
            "fingerprint": self.fingerprint,
            "started_at": self.started_at,
            "seconds": self.seconds,
            "node": self.node,
            "worker": self.worker,
            "resources": self.resources,
            "error": self.error,
            "artifacts": {
                k: {"digest": a.digest, "uri": a.uri, "type": a.type}
                for k, a in self.artifacts.items()
            },
            "usage": self.usage,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        return cls(
            step=d["step"],
            kind=d["kind"],
            attempt=d["attempt"],
            state=d["state"],
            fingerprint=d.get("fingerprint"),
            started_at=d.get("started_at"),
            seconds=d.get("seconds"),
            node=d.get("node"),
            worker=d.get("worker"),
            resources=d.get("resources") or {},
            error=d.get("error"),
            artifacts={k: Artifact.from_dict(a) for k, a in (d.get("artifacts") or {}).items()},
            usage=d.get("usage"),
        )


@dataclass(frozen=True)
class RunStatus:
    """A run as `cairn status` shows it: its state, every attempt of every step, its events."""

    run_id: str
    workflow: str
    workflow_path: str
    state: str
    created_at: str | None
    seconds: float | None
    resumed_from: str | None
    code_version: str | None
    ray_address: str | None
    mlflow_run_id: str | None
    driver: str | None
    driver_alive: bool | None
    error: str | None
    steps: list[Attempt]
    compute: dict[str, dict[str, float]]
    events: list[Event]
    # What the Ray Jobs API says of a submitted run that is not finished (None otherwise).
    ray_job_status: str | None = None
    owner: str | None = None  # an API token's name, or user@host for a local run

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "workflow_path": self.workflow_path,
            "status": self.state,
            "created_at": self.created_at,
            "seconds": self.seconds,
            "resumed_from": self.resumed_from,
            "code_version": self.code_version,
            "ray_address": self.ray_address,
            "mlflow_run_id": self.mlflow_run_id,
            "driver": self.driver,
            "driver_alive": self.driver_alive,
            "error": self.error,
            "steps": [a.to_dict() for a in self.steps],
            "compute": self.compute,
            "events": [e.to_dict() for e in self.events],
            "owner": self.owner,
        }
        if self.ray_job_status is not None:
            data["ray_job_status"] = self.ray_job_status
        return data

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunStatus:
        return cls(
            run_id=d["run_id"],
            workflow=d["workflow"],
            workflow_path=d.get("workflow_path", ""),
            state=d["status"],
            created_at=d.get("created_at"),
            seconds=d.get("seconds"),
            resumed_from=d.get("resumed_from"),
            code_version=d.get("code_version"),
            ray_address=d.get("ray_address"),
            mlflow_run_id=d.get("mlflow_run_id"),
            driver=d.get("driver"),
            driver_alive=d.get("driver_alive"),
            error=d.get("error"),
            steps=[Attempt.from_dict(a) for a in d.get("steps", [])],
            compute=d.get("compute") or {},
            events=[Event.from_dict(e) for e in d.get("events", [])],
            ray_job_status=d.get("ray_job_status"),
            owner=d.get("owner"),
        )

    def result(self) -> RunResult:
        """The run as `cairn.run` reports it: each step's last attempt and its outputs."""
        steps: dict[str, StepResult] = {}
        for a in self.steps:
            steps[a.step] = StepResult(
                a.step, a.kind, a.state, a.fingerprint, a.attempt, dict(a.artifacts), a.error
            )
        return RunResult(self.run_id, self.state, steps, self.error)


@dataclass(frozen=True)
class RunSummary:
    """One line of `cairn runs`."""

    run_id: str
    workflow: str
    state: str
    created_at: str | None
    seconds: float | None
    resumed_from: str | None
    owner: str | None = None
    steps: int = 0  # distinct steps with at least one attempt
    cache_hits: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.state,
            "created_at": self.created_at,
            "seconds": self.seconds,
            "resumed_from": self.resumed_from,
            "owner": self.owner,
            "steps": self.steps,
            "cache_hits": self.cache_hits,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSummary:
        return cls(
            d["run_id"],
            d["workflow"],
            d["status"],
            d.get("created_at"),
            d.get("seconds"),
            d.get("resumed_from"),
            d.get("owner"),
            d.get("steps", 0),
            d.get("cache_hits", 0),
        )


@dataclass(frozen=True)
class RunLogs:
    """A run's logs: the engine's (`run`), each step's, and the Ray job driver's if submitted."""

    run_id: str
    logs: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "logs": self.logs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunLogs:
        return cls(d["run_id"], d["logs"])


@dataclass
class LineageNode:
    """An artifact and, through `parents`, everything it was made from, back to raw sources.

    `slot` is the input through which this node fed its child (None at the root); `license` is
    the licence the workflow stated for an external source (None where it stated none)."""

    digest: str
    type: str
    uri: str | None = None
    step: str | None = None
    kind: str | None = None
    run_id: str | None = None
    status: str | None = None
    slot: str | None = None
    parents: list[LineageNode] = field(default_factory=list)
    license: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"slot": self.slot} if self.slot is not None else {}
        out |= {
            "digest": self.digest,
            "type": self.type,
            "uri": self.uri,
            "step": self.step,
            "kind": self.kind,
            "run_id": self.run_id,
            "status": self.status,
            "parents": [p.to_dict() for p in self.parents],
        }
        if self.license:
            out["license"] = self.license
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineageNode:
        return cls(
            digest=d["digest"],
            type=d["type"],
            uri=d.get("uri"),
            step=d.get("step"),
            kind=d.get("kind"),
            run_id=d.get("run_id"),
            status=d.get("status"),
            slot=d.get("slot"),
            parents=[cls.from_dict(p) for p in d.get("parents", [])],
            license=d.get("license"),
        )


@dataclass(frozen=True)
class LineageGraph:
    """The same lineage as a flat graph: nodes {digest, type, kind, step, uri, run_id} and edges
    {parent, child, slot}; `root` is the artifact asked about. A release bundle's graph also
    holds its evaluation reports, which are not ancestors of its model."""

    root: str
    nodes: list[dict[str, Any]]
    edges: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "nodes": self.nodes, "edges": self.edges}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineageGraph:
        return cls(d.get("root", ""), d["nodes"], d["edges"])


@dataclass
class Check:
    """One check of an audit; `problems` name each bad file (empty when it holds)."""

    name: str
    problems: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class AuditReport:
    """What `cairn audit` found: `ok` only when every check holds."""

    path: str
    checks: list[Check]
    bundle_digest: str | None = None
    model_digest: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "bundle_digest": self.bundle_digest,
            "model_digest": self.model_digest,
            "checks": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "problems": c.problems}
                for c in self.checks
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AuditReport:
        checks = [
            Check(c["name"], list(c.get("problems") or []), c.get("detail", ""))
            for c in d["checks"]
        ]
        return cls(d["path"], checks, d.get("bundle_digest"), d.get("model_digest"))


@dataclass
class Reproduced:
    """One artifact of a release's lineage as `cairn reproduce` found it: a raw source (its
    copy, verified by digest) or a step's output (recomputed). `differs` names the files whose
    bytes differ (`changed`, `missing` from the reproduction, `extra` in it)."""

    name: str  # a source as the workflow wrote it, or STEP.OUTPUT
    type: str
    recorded: str
    reproduced: str | None
    differs: list[str] = field(default_factory=list)
    origin: str = ""  # a source's: bundle, --sources or its URI

    @property
    def same(self) -> bool:
        return self.recorded == self.reproduced

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "same": self.same,
            "recorded": self.recorded,
            "reproduced": self.reproduced,
            "differs": self.differs,
            "origin": self.origin,
        }


@dataclass
class ReproduceReport:
    """What `cairn reproduce` found: `ok` only when every source and every recomputed artifact
    has its recorded digest. `artifacts` are in the lineage's topological order, so the first
    that differs is where the reproduction diverged."""

    bundle: str
    home: str
    run_id: str | None
    artifacts: list[Reproduced]
    versions: dict[str, tuple[str, str]] = field(default_factory=dict)  # recorded, installed
    stopped: str | None = None  # why the workflow was not re-run
    audit_problems: list[str] = field(default_factory=list)  # the bundle's, before re-running

    @property
    def ok(self) -> bool:
        return (
            self.stopped is None and not self.audit_problems and all(a.same for a in self.artifacts)
        )

    @property
    def first_difference(self) -> Reproduced | None:
        return next((a for a in self.artifacts if not a.same), None)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_difference
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "home": self.home,
            "run_id": self.run_id,
            "stopped": self.stopped,
            "audit_problems": self.audit_problems,
            "first_difference": first.name if first else None,
            "versions": {p: {"recorded": r, "installed": i} for p, (r, i) in self.versions.items()},
            "artifacts": [a.to_dict() for a in self.artifacts],
        }


@dataclass
class SignedRelease:
    """What `cairn release sign` did: the bundle, its signature file, how many files it signs,
    the signing key's public half as model-signing names it (sha256 of its PEM), and the audit
    the bundle passed before it was signed."""

    path: str
    signature: str
    files: int
    key_sha256: str
    audit: AuditReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "signature": self.signature,
            "files": self.files,
            "key_sha256": self.key_sha256,
            "audit": self.audit.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SignedRelease:
        return cls(
            d["path"],
            d["signature"],
            d["files"],
            d["key_sha256"],
            AuditReport.from_dict(d["audit"]),
        )
