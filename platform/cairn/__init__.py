"""Cairn: a language model's whole life as one workflow on Ray, with lineage anyone can audit.

The documented Python API (the CLI calls exactly this, and nothing below it):

    import cairn

    wf = cairn.load_workflow("workflows/quickstart.yaml")    # validate (raises SpecError)
    result = cairn.run(wf)                                    # RunResult, on the embedded default
    run_id = cairn.submit(wf, "http://HEAD:8265")             # on a Ray cluster (Jobs API)
    cairn.status(run_id).state; cairn.runs(); cairn.logs(run_id).logs["run"]
    cairn.cancel(run_id); cairn.resume(run_id)
    tree = cairn.lineage(result.steps["base"].artifacts["model"].digest)   # LineageNode
    report = cairn.audit(result.releases[0])                  # AuditReport; report.ok
    again = cairn.reproduce(result.releases[0])               # ReproduceReport; again.ok
    cairn.sign_release(bundle, "key.pem"); cairn.audit(bundle, public_key="key.pub.pem")

Each function uses `cairn.connect()`: a `cairn.Client()` built from the environment (CAIRN_HOME,
CAIRN_DATABASE_URL, MLFLOW_TRACKING_URI, CAIRN_STORE), or, when CAIRN_SERVER is set, a
`cairn.remote.RemoteClient` that asks that `cairn server` (with CAIRN_TOKEN) and returns the same
types; build a `Client(settings)` to address another deployment directly.
Everything returned is a type from `cairn.results`, exported here; `cairn.testing` has the fakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cairn.client import Client
from cairn.errors import CairnError, SpecError, StageError
from cairn.results import (
    Artifact,
    Attempt,
    AuditReport,
    Check,
    Event,
    LineageGraph,
    LineageNode,
    Reproduced,
    ReproduceReport,
    RunLogs,
    RunResult,
    RunStatus,
    RunSummary,
    SignedRelease,
    StepResult,
)
from cairn.settings import Settings

if TYPE_CHECKING:
    from cairn.engine.progress import Display
    from cairn.remote import RemoteClient
    from cairn.workflow import Workflow

__all__ = [
    "Artifact",
    "Attempt",
    "AuditReport",
    "CairnError",
    "Check",
    "Client",
    "Event",
    "LineageGraph",
    "LineageNode",
    "ReproduceReport",
    "Reproduced",
    "RunLogs",
    "RunResult",
    "RunStatus",
    "RunSummary",
    "Settings",
    "SignedRelease",
    "SpecError",
    "StageError",
    "StepResult",
    "Workflow",
    "audit",
    "cancel",
    "connect",
    "lineage",
    "load_workflow",
    "logs",
    "reproduce",
    "resume",
    "run",
    "runs",
    "sign_release",
    "status",
    "submit",
]


def connect() -> Client | RemoteClient:
    """The deployment this process talks to: the `cairn server` at CAIRN_SERVER (as CAIRN_TOKEN)
    when set, else the local one (`Client()`, from CAIRN_HOME and friends)."""
    from cairn.remote import from_env

    return from_env() or Client()


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file; raises `SpecError` naming every problem (file, line,
    field, fix). Writes nothing anywhere."""
    from cairn.workflow import load_workflow as _load

    return _load(path)


def run(
    workflow: Workflow, *, run_id: str | None = None, display: Display | None = None
) -> RunResult:
    """Run `workflow` to its end on the embedded default (local Ray) or `RAY_ADDRESS`."""
    return connect().run(workflow, run_id=run_id, display=display)


def submit(
    workflow: Workflow,
    address: str | None = None,
    *,
    python: str | None = None,
    working_dir: str | None = None,
) -> str:
    """Submit `workflow` to the Ray cluster at `address` (http://HEAD:8265); returns the run id.
    Through a server (CAIRN_SERVER), `address` may be left out: the server decides."""
    client = connect()
    if isinstance(client, Client):
        if address is None:
            raise CairnError(
                "submit needs a Ray cluster: give --address http://HEAD:8265, or set "
                "CAIRN_SERVER to a `cairn server` that submits for you"
            )
        return client.submit(workflow, address, python=python, working_dir=working_dir)
    return client.submit(workflow, address)


def status(run_id: str) -> RunStatus:
    """A run's state, every attempt of every step, its compute and its event log."""
    return connect().status(run_id)


def runs(limit: int = 20) -> list[RunSummary]:
    """The newest runs first."""
    return connect().runs(limit)


def logs(run_id: str, step: str | None = None) -> RunLogs:
    """A run's logs: the engine's, each step's (or one), and a submitted run's Ray job driver's."""
    return connect().logs(run_id, step)


def cancel(run_id: str) -> str:
    """Ask a run to stop; returns `cancelling`, `cancelled` or the state it had already ended in."""
    return connect().cancel(run_id)


def resume(run_id: str, *, display: Display | None = None) -> RunResult:
    """A new run of `run_id`'s workflow, linked to it: what it finished comes from the cache."""
    return connect().resume(run_id, display=display)


def lineage(ref: str) -> LineageNode:
    """An artifact's ancestry back to its raw sources: a digest (prefix) or a path to a release
    bundle or artifact directory."""
    return connect().lineage(ref)


def audit(
    path: str | Path, *, load_model: bool = True, public_key: str | Path | None = None
) -> AuditReport:
    """Verify a release bundle (or re-hash one artifact) at `path`; `report.ok` only when every
    check holds, and each failing check names the bad files. With `public_key` (a PEM file) the
    bundle must carry a model-signing signature (`release.sig`) made with its private key."""
    from cairn.client import audit as _audit

    return _audit(path, load_model=load_model, public_key=public_key)


def sign_release(
    path: str | Path, key: str | Path, *, password: str | None = None, load_model: bool = True
) -> SignedRelease:
    """Sign the release bundle at `path` with the elliptic-curve private key in the PEM file
    `key` (OpenSSF model signing, `path/release.sig`), once it passes `audit`; the key is read
    where it lies and never copied."""
    from cairn.client import sign_release as _sign

    return _sign(path, key, password=password, load_model=load_model)


def reproduce(
    bundle: str | Path,
    *,
    home: str | Path | None = None,
    sources: str | Path | None = None,
    ignore_versions: bool = False,
    allow_changed_sources: bool = False,
    display: Display | None = None,
) -> ReproduceReport:
    """Re-run a release's recorded workflow in a fresh Cairn home (`home`, default a temporary
    folder) and compare every artifact of its lineage with the recorded one; `report.ok` only
    when all are bit-identical, and `report.first_difference` names where it diverged."""
    from cairn.reproduction import reproduce as _reproduce

    return _reproduce(
        bundle,
        home=home,
        sources=sources,
        ignore_versions=ignore_versions,
        allow_changed_sources=allow_changed_sources,
        display=display,
    )


def __getattr__(name: str) -> object:
    # `cairn.Workflow` without importing the workflow loader (and every stage kind) at
    # `import cairn`: workers import cairn for its errors and stage SDK only.
    if name == "Workflow":
        from cairn.workflow import Workflow

        return Workflow
    raise AttributeError(f"module 'cairn' has no attribute {name!r}")
