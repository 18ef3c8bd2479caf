"""lm-eval's results as JSON that is the same, byte for byte, for the same evaluation.

The eval report's digest is the sha256 of its files, so two evaluations of the same model on the
same tasks with the same settings must write the same report.json. lm-eval's results hold values
that JSON cannot carry and whose text changes from one process to the next: the Python functions a
task config names (`process_docs` inside `fewshot_config`, a filter or metric given as a callable)
come out of `str()` as `<function process_docs at 0x7f…>`, a memory address. Each such value is
written here as what identifies the code instead (`function_ref`): where it lives, as
`FILE:qualname` for a file of the task folder (relative to it) or `module:qualname` for an
installed module, and the sha256 of that source file, so a reader can tell which code ran and
whether it changed.

What cannot be made stable stays out of report.json: the time the step took is in the step's log
and in the engine's record of the step run (see pipeline.py), not in the artifact.
"""

from __future__ import annotations

import functools
import inspect
import re
from pathlib import Path
from typing import Any

from cairn.stages.evaluate import taskfolder

# A default repr carries the object's address: `<function f at 0x7f3a…>`, `<Foo object at 0x…>`.
ADDRESS = re.compile(r" at 0x[0-9A-Fa-f]+")
# The same inside text lm-eval wrote itself: a task config's function it could not read the
# source of is `str(function)` there. Only the repr's shape, so a template's own text is kept.
REPR = re.compile(r"<((?:[^<>]|<locals>|<lambda>)*?) at 0x[0-9A-Fa-f]+>")


def jsonable(value: Any, root: Path, files: dict[str, str]) -> Any:
    """`json.dumps(default=...)` for lm-eval's results: numpy scalars as numbers, sets as sorted
    lists, callables as `function_ref`, anything else as its text without memory addresses.

    `root` is the task folder lm-eval read (the step's copy) and `files` the sha256 of the
    input's files by relative path: code from the folder is named relative to it."""
    if value is None or isinstance(value, str | int | float | list | tuple | dict):
        return value  # JSON's own (reached through a partial's arguments)
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if callable(value):
        return function_ref(value, root, files)
    return ADDRESS.sub("", str(value))


def function_ref(fn: Any, root: Path, files: dict[str, str]) -> dict[str, Any]:
    """{function: "FILE:qualname" or "module:qualname", sha256: of its source file or None}, and,
    for a `functools.partial`, the arguments it binds."""
    target = fn.func if isinstance(fn, functools.partial) else fn
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    source = _source_file(target)
    resolved_root = root.resolve()
    if source is not None and source.is_relative_to(resolved_root):
        rel = source.relative_to(resolved_root).as_posix()
        ref: dict[str, Any] = {"function": f"{rel}:{qualname}", "sha256": files.get(rel)}
    else:
        digest = taskfolder.sha256(source) if source is not None else None
        ref = {"function": f"{module}:{qualname}", "sha256": digest}
    if isinstance(fn, functools.partial):
        ref["args"] = [jsonable(a, root, files) for a in fn.args]
        ref["keywords"] = {k: jsonable(v, root, files) for k, v in sorted(fn.keywords.items())}
    return ref


def _source_file(target: Any) -> Path | None:
    """The Python file that defines `target`, or None (a builtin, or code with no file)."""
    try:
        name = inspect.getsourcefile(target)
    except TypeError:  # builtins and C extensions have no source file
        try:
            name = inspect.getsourcefile(type(target))
        except TypeError:
            return None
    path = Path(name).resolve() if name else None
    return path if path is not None and path.is_file() else None
