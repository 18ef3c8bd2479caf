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


def step_dependencies(text: str) -> dict[str, list[str]]:
    """Each step of a recorded workflow's `text`, in the file's order, with the steps it reads
    from: the shape of its DAG without validating it again (a recorded run's sources may be
    gone, and the dashboard redraws a running run's DAG every two seconds). Empty when the text
    is not a workflow's YAML."""
    from cairn.workflow.yamlload import Refused, compose

    try:
        data = compose(text).construct()
    except Refused:
        return {}
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, dict):
        return {}
    graph: dict[str, list[str]] = {}
    for name, step in steps.items():
        inputs = step.get("inputs") if isinstance(step, dict) else None
        refs: list[str] = []
        for value in (inputs or {}).values() if isinstance(inputs, dict) else ():
            refs.extend(
                v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)
            )
        upstream = {r.split(".", 1)[0] for r in refs if not is_external(r) and "." in r}
        graph[str(name)] = sorted(u for u in upstream if u in steps and u != name)
    return graph


__all__ = [
    "Ref",
    "Step",
    "Workflow",
    "is_external",
    "load_workflow",
    "parse_workflow",
    "step_dependencies",
]
