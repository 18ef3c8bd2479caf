"""What a release says about each of its evaluations' contamination check.

Each eval report carries the record of evaluate's decontamination gate (evaluate/gate.py); the
release summarises it per evaluation step, logs it, and puts it in its metadata and model card,
so a reader of the release does not have to open report.json to learn that a score was allowed
through unchecked.
"""

from __future__ import annotations

import json
from typing import Any

from cairn.stage import InputArtifact, Inputs
from cairn.stage.files import MANIFEST


def contamination(inputs: Inputs) -> dict[str, dict[str, Any]]:
    """Per eval step (the bundle's evals/<step>/), `summarise` of its report's metadata."""
    given = inputs.get("evals") or []
    evals = given if isinstance(given, list) else [given]
    out: dict[str, dict[str, Any]] = {}
    for e in evals:
        step = _step(e)
        if step in out:
            step = f"{step}-{e.digest[:8]}"
        out[step] = summarise(e.metadata or {})
    return out


def summarise(metadata: dict[str, Any]) -> dict[str, Any]:
    """{recorded, allowed, checked, unchecked_tasks, contaminated_docs} from an eval_report's
    metadata; `recorded: false` for a report made before evaluate recorded contamination."""
    summary = metadata.get("contamination")
    if not isinstance(summary, dict):
        return {"recorded": False, "allowed": None, "checked": None}
    return {
        "recorded": True,
        "allowed": bool(metadata.get("allow_contaminated", summary.get("allowed"))),
        "checked": bool(summary.get("checked")),
        "unchecked_tasks": list(summary.get("unchecked_tasks") or []),
        "contaminated_docs": dict(summary.get("contaminated_docs") or {}),
    }


def describe(entry: dict[str, Any]) -> str:
    """One line on an eval's contamination check (a `summarise` entry), for the log and the
    model card."""
    if not entry["recorded"]:
        return "contamination check not recorded (report made before Cairn recorded it)"
    docs = ", ".join(f"{n} {a}" for a, n in sorted(entry["contaminated_docs"].items()))
    found = f"; overlapping training documents: {docs}" if docs else ""
    if entry["checked"]:
        return "every task's data was checked against the training data" + found
    tasks = ", ".join(entry["unchecked_tasks"])
    return f"NOT checked against the training data (allow_contaminated: true): {tasks}" + found


def _step(e: InputArtifact) -> str:
    """The step that made an eval report, from its manifest (the bundle's evals/<step>/)."""
    manifest = e.path / MANIFEST
    if manifest.is_file():
        step = json.loads(manifest.read_text(encoding="utf-8")).get("step")
        if step:
            return str(step)
    return e.name or e.digest[:12]
