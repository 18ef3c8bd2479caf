"""`include:` in a task folder: followed only inside the folder, and every failure named by line.

lm-eval lets a task YAML `include:` another file, by a path relative to the including file or an
absolute one, and by convention the shared base of a family of tasks is a file without the
`.yaml` suffix (`_default_template_yaml`), so that lm-eval does not index it as a task itself.
It skips a YAML whose include it cannot load without a word, and the tasks it defined then "do not
exist".

The `tasks` input is the whole of what an evaluation reads: it is digested, copied into the
report, and checked for contamination as one folder. A file included from elsewhere would be
none of these, and an include that leaves the folder (`../`, an absolute path, or a symbolic link
to anywhere) would let a task folder read any YAML on the machine that evaluates. So every include
of every YAML of the folder, and of the files those include, must name a regular file inside the
folder; anything else is a `StageError` naming the YAML, the line of the include and the fix.
`check` also returns the included files that are not `*.yaml`: lm-eval reads them as configs,
so their data paths are resolved like a task YAML's (taskdir, taskcopy). Curate's
decontamination reads task folders under the same rule (taskfolder.task_data).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from cairn.errors import StageError
from cairn.stages.evaluate import taskyaml

FIX_COPY = "copy the file into the tasks folder and include it by its path relative to this YAML"
ONE_FOLDER = (
    "a task folder is read as one folder (evaluate digests and ships it, decontamination checks "
    "its data), so includes must stay inside it"
)


def check(source: Path, yamls: list[Path], *, who: str = "", any_tag: bool = False) -> list[str]:
    """Check the includes of the YAMLs `yamls` of the folder `source` (taskfolder.yaml_files),
    and of the files they include, recursively; returns the included files that lm-eval does not
    index as tasks (not `*.yaml`), relative to `source`. `who` and `any_tag` are taskyaml.parse's:
    how errors begin ("eval_tasks: ") and whether a YAML may hold tags lm-eval does not know."""
    root = source.resolve()
    todo = [root / p.relative_to(source) for p in yamls]
    seen: set[Path] = set()
    templates: list[str] = []
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        for line, value in _includes(path, who, any_tag):
            target = _target(path, line, value, root, source, who)
            todo.append(target)
            if target.suffix != ".yaml":
                templates.append(target.relative_to(root).as_posix())
    return sorted(set(templates))


def _includes(path: Path, who: str, any_tag: bool) -> list[tuple[int, object]]:
    """(line, value) of each file the top-level `include:` of the YAML at `path` names."""
    parsed = taskyaml.parse(path, any_tag=any_tag, who=who)  # names a bad file's line
    if not isinstance(parsed.data, dict) or "include" not in parsed.data:
        return []
    node = yaml.compose(path.read_text(encoding="utf-8"), Loader=taskyaml.Loader)
    assert isinstance(node, yaml.MappingNode)  # parse() read a mapping from the same text
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "include":
            items = value.value if isinstance(value, yaml.SequenceNode) else [value]
            return [(n.start_mark.line + 1, _scalar(n)) for n in items]
    return []


def _scalar(node: yaml.Node) -> object:
    kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
    return node.value if isinstance(node, yaml.ScalarNode) else f"a {kind}"


def _target(path: Path, line: int, value: object, root: Path, source: Path, who: str) -> Path:
    """The file an include names, inside the folder; raises StageError naming what is wrong."""
    where = f"{who}{source / path.relative_to(root)}:{line}: include: '{value}'"
    if not isinstance(value, str) or not value.strip():
        raise StageError(
            f"{where} is not a file path; fix: name the file to include by its path relative to "
            "this YAML, e.g. `include: _default_template_yaml`"
        )
    if Path(value).is_absolute():
        raise StageError(
            f"{where} is an absolute path; {ONE_FOLDER}; fix: {FIX_COPY} (e.g. "
            f"`include: {Path(value).name}`)"
        )
    target = Path(os.path.normpath(path.parent / value))
    if not target.is_relative_to(root):
        raise StageError(
            f"{where} points outside the tasks folder {source} (to {target}); {ONE_FOLDER}; "
            f"fix: {FIX_COPY} (e.g. `include: {Path(value).name}`)"
        )
    link = next(
        (p for p in [target, *target.parents] if p.is_relative_to(root) and p.is_symlink()), None
    )
    if link is not None:
        raise StageError(
            f"{where} goes through {source / link.relative_to(root)}, a symbolic link (to "
            f"{os.readlink(link)}); includes must be regular files of the tasks folder; fix: "
            "replace the link by a copy of the file it points to"
        )
    if not target.is_file():
        raise StageError(
            f"{where}: {source / target.relative_to(root)} does not exist; fix: add that file "
            "to the tasks folder, or correct the path (it is relative to this YAML's folder)"
        )
    return target
