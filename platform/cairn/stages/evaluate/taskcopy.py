"""The report's `tasks/`: the task folder as `lm_eval run` reads it, from tasks/ as its directory.

The report's reproduce command runs lm-eval's own CLI from the report's copy of the task folder
(`--include_path .`). lm-eval hands a task's `data_files` to `datasets`, which resolves a relative
path against the working directory, whereas the stage resolves it against the folder of the file
that names it (taskdir, taskfolder.candidates). The two agree for a YAML at the folder's root, but
not for one in a subfolder (`nested/mc.yaml` naming `data/mc.jsonl` next to it): the CLI would
look for `data/mc.jsonl` at the root and fail, or read another file of that name.

So the copy is the input byte for byte, except that each data path the stage found next to a
YAML in a subfolder is rewritten as the path relative to the folder's root, which names the same
file for the CLI. The rewrite splices only those values into the file's text (comments, order and
layout stay), and report.json lists each one with the file's sha256 before and after
(`tasks_input.rewritten_for_cli`), so the input's digests stay checkable.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cairn.stages.evaluate import taskfolder, taskyaml


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    field: str
    written: str
    cli: str


def write(source: Path, dest: Path, configs: list[str]) -> dict[str, dict[str, Any]]:
    """Copy the folder `source` to `dest`, rewriting in the files `configs` (relative paths of
    every file lm-eval reads as a task config) the data paths the CLI would not find; returns
    {file: {input_sha256, sha256, paths: {field: [as written, as the CLI reads it]}}}."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns(*taskfolder.IGNORED_DIRS))
    root = dest.resolve()
    changed: dict[str, dict[str, Any]] = {}
    for rel in configs:
        path = root / rel
        if path.parent == root:
            continue  # the CLI's working directory is this file's folder: nothing to rewrite
        text = path.read_text(encoding="utf-8")
        edits = _edits(text, path.parent, root)
        if not edits:
            continue
        new = text
        for e in sorted(edits, key=lambda e: e.start, reverse=True):
            new = new[: e.start] + json.dumps(e.cli, ensure_ascii=False) + new[e.end :]
        path.write_text(new, encoding="utf-8")
        changed[rel] = {
            "input_sha256": _sha(text),
            "sha256": _sha(new),
            "paths": {e.field: [e.written, e.cli] for e in sorted(edits, key=lambda e: e.start)},
        }
    return changed


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _edits(text: str, here: Path, root: Path) -> list[_Edit]:
    node = yaml.compose(text, Loader=taskyaml.Loader)
    found: dict[int, _Edit] = {}  # by position: an alias repeats a node, which is edited once
    for field, scalar in _data_scalars(node, ""):
        edit = _edit(scalar, field, here, root)
        if edit is not None:
            found.setdefault(edit.start, edit)
    return list(found.values())


def _edit(node: yaml.ScalarNode, field: str, here: Path, root: Path) -> _Edit | None:
    """The rewrite of one data path, or None where the CLI reads it as the stage did."""
    value = node.value
    if node.style in ("|", ">") or Path(value).is_absolute() or "://" in value:
        return None
    is_dir = field.endswith("dataset_path")
    if is_dir and (value in taskfolder.LOCAL_BUILDERS or not (here / value).is_dir()):
        return None  # a `datasets` builder or a Hub name, not a path
    beside, _ = taskfolder.candidates(value, here, root)
    if not taskfolder.expand(beside):
        return None  # found at the root (or nowhere): the CLI resolves it the same way
    cli = posixpath.normpath(posixpath.join(here.relative_to(root).as_posix(), value))
    if cli.startswith("../"):
        return None  # outside the folder: neither the copy nor the CLI has it
    return _Edit(node.start_mark.index, node.end_mark.index, field, value, cli)


def _data_scalars(node: yaml.Node | None, where: str) -> list[tuple[str, yaml.ScalarNode]]:
    """(field, node) of every data path in a YAML document (taskfolder.data_refs, on nodes)."""
    out: list[tuple[str, yaml.ScalarNode]] = []
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out += _data_scalars(item, f"{where[:-1]}[{i}].")
    if not isinstance(node, yaml.MappingNode):
        return out
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) else ""
        if name == "dataset_kwargs" and isinstance(value, yaml.MappingNode):
            for k, v in value.value:
                if isinstance(k, yaml.ScalarNode) and k.value in ("data_files", "data_dir"):
                    out += _scalars(v, f"{where}dataset_kwargs.{k.value}")
        elif name == "dataset_path" and isinstance(value, yaml.ScalarNode):
            out.append((f"{where}dataset_path", value))
        else:
            out += _data_scalars(value, f"{where}{name}.")
    return out


def _scalars(node: yaml.Node, field: str) -> list[tuple[str, yaml.ScalarNode]]:
    if isinstance(node, yaml.ScalarNode):
        return [(field, node)]
    if isinstance(node, yaml.SequenceNode):
        return [p for i, n in enumerate(node.value) for p in _scalars(n, f"{field}[{i}]")]
    if isinstance(node, yaml.MappingNode):
        return [p for k, v in node.value for p in _scalars(v, f"{field}.{k.value}")]
    return []
