"""The Python a task folder would run: refused unless the step trusts it, recorded when it does.

An lm-eval task YAML can name Python with `!function module.name` (process_docs, doc_to_text,
process_results, a `class:` task...). lm-eval imports `module.py` from beside the YAML, which runs
the whole file, with the step's permissions, on the machine that evaluates. A task folder is an
input like any other: downloaded, shared, or edited by someone other than whoever runs the step.
So Cairn refuses it unless the step says `trust_task_code: true`, naming each `!function` by file
and line before lm-eval has loaded anything. A step that trusts the folder records, in its report
and its release, which Python files ran (with their sha256) and which YAML lines named them, so a
reader of the scores knows they came from code and which code.

Only the YAMLs lm-eval loads for the step's tasks count (each task's YAML and what it includes,
and the YAMLs of the groups asked for): a `!function` in a task that is not run stays unread.
Curate's decontamination reads the same folders but never runs their Python (taskyaml parses
`!function` as text), so it needs no flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cairn.errors import StageError
from cairn.stages.evaluate import taskfolder, taskyaml
from cairn.stages.evaluate.taskdir import TaskDir

FIX = "set trust_task_code: true on this evaluate step if you trust this folder's Python"
SHOWN = 10  # `!function`s listed in a refusal; the rest are counted


def check(trust: bool, tasks: TaskDir) -> dict[str, Any]:
    """The report's `task_code` record: {trust_task_code, python_files: [{path, sha256}],
    functions: [{yaml, line, function, file}]}. Raises `StageError` if the step's tasks name
    Python and `trust` is false."""
    functions = found(tasks)
    if functions and not trust:
        listed = [
            f"  {tasks.source / f['yaml']}:{f['line']}: !function {f['function']}"
            + (f" (runs {tasks.source / f['file']})" if f["file"] else "")
            for f in functions[:SHOWN]
        ]
        more = len(functions) - SHOWN
        raise StageError(
            f"the tasks input {tasks.source} names Python for lm-eval to run, which runs with "
            "this step's permissions:\n"
            + "\n".join(listed)
            + (f"\n  ... and {more} more" if more > 0 else "")
            + f"\nfix: {FIX}; otherwise replace each !function with a template or field name"
        )
    files = sorted({f["file"] for f in functions if f["file"]})
    return {
        "trust_task_code": trust,
        "python_files": [{"path": p, "sha256": _digest(p, tasks)} for p in files],
        "functions": functions,
    }


def found(tasks: TaskDir) -> list[dict[str, Any]]:
    """Every `!function` in the YAMLs lm-eval loads for the step's tasks, with the Python file it
    runs (relative to the task folder where it is inside it; None for an installed module)."""
    out = []
    for rel in tasks.loaded:
        path = Path(rel) if Path(rel).is_absolute() else tasks.source / rel
        for line, value in taskyaml.parse(path).functions:
            file = taskyaml.function_file(value, path)
            out.append(
                {
                    "yaml": rel,
                    "line": line,
                    "function": value,
                    "file": _relative(file, tasks.source) if file is not None else None,
                }
            )
    return out


def _relative(path: Path, source: Path) -> str:
    resolved = source.resolve()
    return path.relative_to(resolved).as_posix() if path.is_relative_to(resolved) else str(path)


def _digest(rel: str, tasks: TaskDir) -> str:
    known = tasks.files.get(rel)
    return known if known is not None else taskfolder.sha256(Path(rel))
