"""The `tasks` input made ready for lm-eval: copied, its data paths anchored, the names checked.

Users bring task folders written for `lm_eval --include_path DIR`, and their `data_files` are
usually relative. lm-eval hands them to `datasets`, which resolves them against the process's
working directory, and a stage may not chdir (other steps run in threads of the same process).
So the folder is copied into the step's scratch dir and every relative data path in the copy is
rewritten to an absolute one, resolved against the folder of the YAML that names it (as lm-eval
resolves `include:` and `!function`), falling back to the task folder's root. The original files
are what the report digests and ships; the rewritten copy is only what lm-eval reads.

Everything is checked before the model is loaded, so a typo costs a second, not a model load:
YAMLs that cannot be read (lm-eval would skip them silently; here each is named with its line
and problem), unknown task names (with the available ones and a did-you-mean), missing data
files (naming the YAML, the field and the path), and Hub datasets, which an offline run cannot
fetch. `prepare` also lists the YAMLs lm-eval will load for the step's tasks, whose `!function`
tags `taskcode` refuses unless the step trusts the folder's Python.

How a task folder is read (the YAML loader, `include:`, data paths and their files) is
`taskfolder`, which curate's decontamination reads the same folders with; `taskinclude` keeps
every `include:` inside the folder, and the files it includes (`_default_template_yaml`) have their
data paths anchored like the YAMLs'.
"""

from __future__ import annotations

import difflib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cairn.errors import StageError
from cairn.stages.evaluate import taskfolder, taskinclude, taskyaml

FIX_DATA = (
    "put the data file in the tasks folder and give its path relative to the YAML's folder "
    "(dataset_path: json, dataset_kwargs: {data_files: {test: FILE}})"
)


@dataclass
class Missing:
    """A data path named by a YAML that exists neither next to the YAML nor at the root."""

    yaml: str
    field: str
    value: str
    tried: list[Path]

    def message(self, root: Path, source: Path) -> str:
        """Names the user's files, not the scratch copy the paths were tried in."""
        looked = " or ".join(str(_original(p, root, source)) for p in self.tried)
        return (
            f"{source / self.yaml}: {self.field}: '{self.value}' does not exist (looked for "
            f"{looked}); fix: {FIX_DATA}"
        )


def _original(path: Path, root: Path, source: Path) -> Path:
    try:
        return source / path.relative_to(root)
    except ValueError:
        return path


@dataclass
class TaskDir:
    """The prepared copy and what the report needs to know about it."""

    source: Path  # the `tasks` input as given
    root: Path  # the rewritten copy lm-eval reads
    files: dict[str, str]  # every file of the input, relative path -> sha256
    manager: Any  # lm_eval.tasks.TaskManager over `root` only
    cache_dir: Path  # where `datasets` caches the tasks' data (in scratch, not ~/.cache)
    leaves: dict[str, list[str]] = field(default_factory=dict)  # task -> its YAML chain
    output_types: dict[str, str] = field(default_factory=dict)  # task -> lm-eval output_type
    rewritten: dict[str, list[str]] = field(default_factory=dict)  # YAML -> fields anchored
    # task -> [{path, sha256}] of the data files it reads (what the decontamination gate checks)
    data: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    # the YAMLs lm-eval loads for the step's tasks (leaves, their includes, the groups asked
    # for), relative to the task folder (taskinclude keeps includes inside it)
    loaded: list[str] = field(default_factory=list)
    # every file of the folder lm-eval may read as a task config: the *.yaml it indexes and the
    # files they include, whatever their names (`_default_template_yaml`)
    configs: list[str] = field(default_factory=list)

    def relative(self, path: str | Path) -> str:
        """A path inside the copy as a path relative to the task folder; others unchanged."""
        p = Path(path)
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)


def prepare(source: Path, scratch: Path, names: list[str]) -> TaskDir:
    """Copy `source` to `scratch`, anchor its data paths, and resolve `names` to leaf tasks."""
    if not source.is_dir():
        raise StageError(
            f"tasks input {source} is not a directory; fix: give the folder that holds the task "
            "YAML files and their data (as for lm_eval --include_path), e.g. ./evals/shakespeare"
        )
    _check_yamls(source)
    # Before the copy: an include outside the folder is refused, not silently left behind.
    templates = taskinclude.check(source, taskfolder.yaml_files(source))
    scratch = scratch.resolve()  # paths in the copy are compared with resolved ones
    if scratch.exists():
        shutil.rmtree(scratch)  # a retry starts from the input, not from an earlier rewrite
    shutil.copytree(source, scratch, ignore=shutil.ignore_patterns(*taskfolder.IGNORED_DIRS))
    cache_dir = scratch.parent / f"{scratch.name}-datasets-cache"
    files = taskfolder.digest_tree(source)
    missing: list[Missing] = []
    rewritten: dict[str, list[str]] = {}
    # lm-eval indexes only *.yaml; the templates they include name data paths as well.
    indexed = [
        p.relative_to(scratch).as_posix() for p in taskfolder.yaml_files(scratch, ("*.yaml",))
    ]
    configs = sorted({*indexed, *templates})
    for rel in configs:
        fields = _anchor(scratch / rel, scratch, cache_dir, missing)
        if fields:
            rewritten[rel] = fields

    from lm_eval.tasks import TaskManager  # heavy: pulls in datasets and torch

    # Only the input's tasks: lm-eval's ~15k built-in YAMLs would cost ~7 s to index, and their
    # data would have to be downloaded, which an offline, digested evaluation cannot do.
    manager = TaskManager(include_path=str(scratch), include_defaults=False)
    tasks = TaskDir(
        source, scratch, files, manager, cache_dir, rewritten=rewritten, configs=configs
    )
    index = manager.task_index
    loaded: list[str] = []
    for name in names:
        _check_name(name, index, source)
        for leaf, cfg, chain in _leaves(name, index, scratch, source, [], loaded):
            _check_data(leaf, cfg, chain, missing, scratch, source)
            tasks.leaves[leaf] = chain
            tasks.output_types[leaf] = str(cfg.get("output_type", ""))
            tasks.data[leaf] = _data_files(cfg, tasks)
            loaded += chain
    tasks.loaded = list(dict.fromkeys(loaded))
    return tasks


def _check_yamls(source: Path) -> None:
    """Fail on a YAML of the folder that lm-eval would skip without a word: one that is not valid
    YAML (taskyaml.parse names its line), or a *.yaml that is not a mapping (lm-eval indexes
    only mappings, and then reports the tasks it defined as unknown)."""
    for path in taskfolder.yaml_files(source):
        data = taskyaml.parse(path).data
        if path.suffix == ".yaml" and not isinstance(data, dict):
            held = "nothing" if data is None else f"a {type(data).__name__}"
            raise StageError(
                f"{path}: holds {held}, not a task config (a mapping such as `task: NAME`, "
                "`dataset_path: json`, ...), so lm-eval would skip it; fix: write the task's "
                "settings as `key: value` lines, or remove the file from the task folder"
            )


def _data_files(cfg: dict[str, Any], tasks: TaskDir) -> list[dict[str, str]]:
    """[{path, sha256}] of the files a task reads: relative to the task folder where they are
    in it (digested with the folder), else absolute (digested here)."""
    out = []
    for value in taskfolder.data_paths(cfg):
        for file in taskfolder.expand(value):
            rel = tasks.relative(file)
            out.append({"path": rel, "sha256": tasks.files.get(rel) or taskfolder.sha256(file)})
    return out


# --- rewriting relative paths -------------------------------------------------------------------


def _anchor(path: Path, root: Path, cache_dir: Path, missing: list[Missing]) -> list[str]:
    """Rewrite the relative data paths of one YAML in place; returns the fields it changed.

    Each task's `datasets` cache is pointed into scratch as well: the copy's paths are new on
    every run, so caching under ~/.cache would add an entry per run and never reuse one.
    """
    cfg = taskyaml.parse(path).data  # the copy of a YAML `_check_yamls` read: it parses
    rel = path.relative_to(root).as_posix()
    changed: list[str] = []
    cache_added = False
    for where, mapping in list(taskfolder.mappings(cfg, "")):  # listed first: the loop edits them
        kwargs = mapping.get("dataset_kwargs")
        if isinstance(kwargs, dict):
            if "cache_dir" not in kwargs:
                kwargs["cache_dir"] = str(cache_dir)
                cache_added = True
            prefix = f"{where}dataset_kwargs"
            for name in ("data_files", "data_dir"):
                value = kwargs.get(name)
                new = _anchor_value(value, f"{prefix}.{name}", path.parent, root, rel, missing)
                if new != value:
                    kwargs[name] = new
                    changed.append(f"{prefix}.{name}")
        dataset_path = mapping.get("dataset_path")
        if isinstance(dataset_path, str) and _is_local_dir(dataset_path, path.parent):
            mapping["dataset_path"] = str((path.parent / dataset_path).resolve())
            changed.append(f"{where}dataset_path")
    if changed or cache_added:
        text = yaml.dump(
            cfg, Dumper=taskyaml.Dumper, sort_keys=False, allow_unicode=True, width=1000
        )
        path.write_text(text, encoding="utf-8")
    return changed


def _anchor_value(
    value: Any, field: str, here: Path, root: Path, yaml_rel: str, missing: list[Missing]
) -> Any:
    if isinstance(value, str):
        if Path(value).is_absolute() or "://" in value:
            return value
        tried = taskfolder.candidates(value, here, root)
        for candidate in tried:
            if taskfolder.expand(candidate):
                return str(candidate)
        missing.append(Missing(yaml_rel, field, value, list(dict.fromkeys(tried))))
        return value
    if isinstance(value, list):
        return [
            _anchor_value(v, f"{field}[{i}]", here, root, yaml_rel, missing)
            for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            k: _anchor_value(v, f"{field}.{k}", here, root, yaml_rel, missing)
            for k, v in value.items()
        }
    return value


def _is_local_dir(dataset_path: str, here: Path) -> bool:
    relative = (
        not Path(dataset_path).is_absolute() and dataset_path not in taskfolder.LOCAL_BUILDERS
    )
    return relative and (here / dataset_path).is_dir()


# --- resolving and checking names ---------------------------------------------------------------


def _check_name(name: str, index: dict[str, Any], source: Path) -> None:
    if name in index:
        return
    available = sorted(index)
    close = difflib.get_close_matches(name, available, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    listed = ", ".join(available) if available else "none (no task YAML found)"
    raise StageError(
        f"task '{name}' is not defined in the tasks input {source}; {hint}"
        f"available tasks, groups and tags: {listed}; fix: use one of these names under the "
        "step's config.tasks, or add a YAML with `task: NAME` to the tasks folder"
    )


def _leaves(
    name: str,
    index: dict[str, Any],
    root: Path,
    source: Path,
    stack: list[str],
    groups: list[str],
) -> Iterator[tuple[str, dict[str, Any], list[str]]]:
    """(leaf task name, merged config, YAML chain) of every task `name` stands for; the YAML
    chains of the groups on the way are added to `groups`."""
    entry = index[name]
    kind = entry.kind.name  # by name: lm-eval's Kind enum lives in a private module
    here = source / entry.yaml_path.relative_to(root) if entry.yaml_path else source
    if kind == "TAG":
        for task in sorted(entry.tags):
            yield from _leaves(task, index, root, source, [*stack, name], groups)
    elif kind == "GROUP":
        groups += taskfolder.include_chain(entry.yaml_path, root)
        for item in entry.cfg.get("task") or []:
            task = item if isinstance(item, str) else item.get("task") or item.get("group")
            if isinstance(item, dict) and task not in index:
                # An inline task config in the group's YAML.
                yield task, item, [here.relative_to(source).as_posix()]
                continue
            if task not in index:
                raise StageError(
                    f"{here}: group '{name}' lists task '{task}', which no YAML in the tasks "
                    "folder defines; fix: add its YAML and data to the folder (evaluate reads "
                    "only the tasks input: lm-eval's built-in tasks would need a download)"
                )
            if task in stack:
                raise StageError(f"{here}: group '{name}' includes itself through '{task}'")
            yield from _leaves(task, index, root, source, [*stack, name], groups)
    else:
        yield name, entry.cfg, taskfolder.include_chain(entry.yaml_path, root)


def _check_data(
    task: str,
    cfg: dict[str, Any],
    chain: list[str],
    missing: list[Missing],
    root: Path,
    source: Path,
) -> None:
    """Fail on a data path of `task` that the rewrite could not find, or on a Hub dataset."""
    where = source / chain[0] if chain else source
    for value in taskfolder.data_paths(cfg):
        if Path(value).is_absolute() and taskfolder.expand(value):
            continue
        known = [m for m in missing if m.value == value and m.yaml in chain]
        if known:
            raise StageError(f"task '{task}': {known[0].message(root, source)}")
        raise StageError(
            f"{where}: task '{task}' names data '{value}', which does not exist; fix: {FIX_DATA}"
        )
    dataset_path = cfg.get("dataset_path")
    is_builder = dataset_path in taskfolder.LOCAL_BUILDERS
    if "class" not in cfg and not is_builder and not Path(str(dataset_path)).is_absolute():
        raise StageError(
            f"{where}: task '{task}' reads dataset_path '{dataset_path}', a Hugging Face Hub "
            f"dataset; evaluate runs offline on the data in the tasks input; fix: {FIX_DATA}"
        )
    if is_builder and not (cfg.get("dataset_kwargs") or {}).get("data_files"):
        raise StageError(
            f"{where}: task '{task}' reads dataset_path '{dataset_path}' but names no "
            f"dataset_kwargs.data_files; fix: {FIX_DATA}"
        )
