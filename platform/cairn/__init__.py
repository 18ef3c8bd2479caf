"""Cairn: a language model's whole life as one workflow on Ray, with lineage anyone can audit.

The documented Python API:

    wf = cairn.load_workflow("workflows/quickstart.yaml")   # validate (raises SpecError)
    result = cairn.run(wf)                                   # on the embedded default
    run_id = cairn.submit(wf, "http://HEAD:8265")            # on a Ray cluster (Jobs API)
    tree = cairn.lineage(result.steps["model"].artifacts["model"]["digest"])
    report = cairn.audit(".cairn/store/release/…/release")   # verify a release; report.ok
"""

from __future__ import annotations

from typing import Any

from cairn.errors import CairnError, SpecError, StageError
from cairn.spec import Workflow, load_workflow

__all__ = [
    "CairnError",
    "SpecError",
    "StageError",
    "Workflow",
    "audit",
    "lineage",
    "load_workflow",
    "run",
    "submit",
]


def run(workflow: Workflow, run_id: str | None = None) -> Any:
    """Run `workflow` and return a `RunResult` (state of the run and of every step)."""
    from cairn.engine import Engine
    from cairn.settings import Settings

    return Engine(Settings.from_env()).run(workflow, run_id=run_id)


def submit(workflow: Workflow, address: str) -> str:
    """Submit `workflow` to the Ray cluster at `address` (http://HEAD:8265); returns the run id."""
    from cairn import jobs
    from cairn.engine import Engine
    from cairn.settings import Settings

    return jobs.submit(Engine(Settings.from_env()), workflow, address)


def lineage(digest: str) -> dict[str, Any]:
    """An artifact's ancestry, back to its raw sources, as a nested dict."""
    from cairn.engine import Engine
    from cairn.report import lineage as _lineage
    from cairn.settings import Settings

    with Engine(Settings.from_env()).sessions() as s:
        return _lineage(s, digest)


def audit(path: str, load_model: bool = True) -> Any:
    """Verify a release bundle (or re-hash one artifact) at `path`; returns an `AuditReport`
    whose `.ok` is True only when every check holds and whose checks name each bad file."""
    from cairn.audit import audit as _audit

    return _audit(path, load_model=load_model)
