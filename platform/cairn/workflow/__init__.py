"""Workflow files: YAML → validated `Workflow`, or a `SpecError` listing every problem.

Validation covers the whole DAG before anything runs (kinds, references, cycles, artifact types,
each kind's own config model, resources, external paths) and is pure: it writes nothing
anywhere. Each problem names the file, the line, the field and a fix, because the person reading
it is about to edit that file.

| module | holds |
|---|---|
| `model.py` | the file's shape (`WorkflowModel`, `StepModel`) and the result (`Workflow`, `Step`, `Ref`) |
| `checks.py` | the one pass that collects every problem (`Validator`) |
| `messages.py` | pydantic's errors as a message and a fix a person can act on |
"""

from __future__ import annotations

from pathlib import Path

from cairn.errors import SpecError, SpecIssue
from cairn.workflow.checks import Validator
from cairn.workflow.model import Ref, Step, Workflow, is_external


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file. Raises `SpecError` naming every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            [SpecIssue(str(p), None, "(file)", "no such file", "check the path")]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(
            [SpecIssue(str(p), None, "(file)", f"cannot read: {e}", "save it as UTF-8 text")]
        ) from e
    return parse_workflow(text, p)


def parse_workflow(text: str, path: Path) -> Workflow:
    """Validate workflow `text` whose relative paths are relative to `path`'s folder."""
    v = Validator(text, path)
    wf = v.validate()
    if v.issues:
        raise SpecError(v.issues)
    assert wf is not None
    return wf


__all__ = ["Ref", "Step", "Workflow", "is_external", "load_workflow", "parse_workflow"]
