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
| `sources.py` | external inputs (paths, URLs): what each is, or why it cannot be used |
| `yamlload.py` | the YAML reader: bounded (size, depth, aliases), YAML 1.2 scalars, one document |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.errors import SpecError, SpecIssue
from cairn.workflow.checks import Validator
from cairn.workflow.model import Ref, Step, Workflow, is_external
from cairn.workflow.yamlload import MAX_CHARS


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file. Raises `SpecError` naming every problem."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            # Never more than the limit plus one byte: the path may name a huge file or a device.
            data = f.read(MAX_CHARS + 1)
    except FileNotFoundError:
        raise SpecError([_file_issue(p, None, "no such file", "check the path")]) from None
    except IsADirectoryError:
        raise SpecError(
            [_file_issue(p, None, "is a folder", "give the workflow's YAML file in it")]
        ) from None
    except OSError as e:
        raise SpecError(
            [
                _file_issue(
                    p, None, f"cannot read: {e.strerror or e}", "check the path and its permissions"
                )
            ]
        ) from e
    if len(data) > MAX_CHARS:
        raise SpecError(
            [
                _file_issue(
                    p,
                    None,
                    f"the file is over {MAX_CHARS >> 20} MiB; a workflow file is a few KB",
                    "check that this is the workflow file; keep data in files its inputs point to",
                )
            ]
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            [
                _file_issue(
                    p,
                    data.count(b"\n", 0, e.start) + 1,
                    f"byte 0x{data[e.start]:02x} is not UTF-8 text ({e.reason})",
                    "save the file as UTF-8, or remove that character (was a binary file given?)",
                )
            ]
        ) from None
    return parse_workflow(text, p)


def _file_issue(p: Path, line: int | None, message: str, fix: str) -> SpecIssue:
    return SpecIssue(str(p), line, "(file)", message, fix)


def parse_workflow(text: str, path: Path) -> Workflow:
    """Validate workflow `text` whose relative paths are relative to `path`'s folder."""
    v = Validator(text, path)
    wf = v.validate()
    if v.issues:
        raise SpecError(v.issues)
    assert wf is not None
    return wf


def outline(text: str) -> list[dict[str, Any]]:
    """Each step of a recorded workflow's `text`, in the file's order: its name, kind and the
    steps it reads from (`after`), the shape `cairn server`'s validate answers with. Its DAG
    without validating it again: a recorded run's sources may be gone, and the dashboard redraws
    a running run's DAG every two seconds. Empty when the text is not a workflow's YAML."""
    from cairn.workflow.yamlload import Refused, compose

    try:
        data = compose(text).construct()
    except Refused:
        return []
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, dict):
        return []
    out = []
    for name, step in steps.items():
        step = step if isinstance(step, dict) else {}
        given = step.get("inputs")
        inputs: dict[str, Any] = given if isinstance(given, dict) else {}
        refs = [
            ref
            for value in inputs.values()
            for ref in (value if isinstance(value, list) else [value])
            if isinstance(ref, str) and not is_external(ref) and "." in ref
        ]
        after = {ref.split(".", 1)[0] for ref in refs} & set(steps) - {name}
        out.append({"step": str(name), "kind": str(step.get("kind", "")), "after": sorted(after)})
    return out


def repo_relative(path: Path) -> str:
    """The workflow file as its repository names it (`workflows/quickstart.yaml`), or its file
    name outside a repository: how a record names it without saying where this machine keeps it."""
    path = Path(path).resolve()
    for parent in path.parents:
        if (parent / ".git").exists():
            return path.relative_to(parent).as_posix()
    return path.name


__all__ = [
    "Ref",
    "Step",
    "Workflow",
    "is_external",
    "load_workflow",
    "parse_workflow",
    "outline",
    "repo_relative",
]
