"""A folder of lm-eval tasks as both of its readers see it: one set of rules, so they cannot drift.

Two stages read the same task folders. The evaluate stage hands them to lm-eval (`taskdir`
prepares the copy lm-eval reads); curate's decontamination reads their data before any model is
trained (curate/decontam.py). The evaluate stage then refuses to score a task whose data files
no dataset of the model checked (gate.py), so the two must agree on what a task's data is. They
once disagreed, each with its own parser; this module is the one they share:

- reading a YAML (`taskyaml`): lm-eval's one custom tag, `!function`, kept as written and never
  run, and a file that cannot be read named with its line, for both readers alike;
- `include:` as lm-eval follows it: a path or a list of paths, relative to the including YAML,
  and only to a file inside the folder (`taskinclude`);
- the data paths a task config names (`data_refs`): `dataset_kwargs.data_files` (a string, list
  or split mapping, globs allowed), `dataset_kwargs.data_dir`, and a `dataset_path` that is a
  local folder rather than a `datasets` builder (LOCAL_BUILDERS) or a Hub dataset;
- where a relative data path is looked for (`candidates`: next to the YAML that names it, then
  at the folder's root) and which files it stands for (`expand`);
- the rows of a data file, as lm-eval's `datasets` builders read them (`read_rows`).

`task_data` and `read_rows` serve only decontamination (evaluate leaves reading data to lm-eval),
so their errors speak of curate's `eval_tasks` input.
"""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cairn.errors import StageError
from cairn.stages.evaluate import taskinclude
from cairn.stages.evaluate.taskyaml import Function as Function  # decontam's templates
from cairn.stages.evaluate.taskyaml import parse

IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}  # as lm-eval ignores them
# `datasets` builders that read local files; any other dataset_path is a local folder or names a
# Hub dataset, which an offline, digested evaluation cannot download.
LOCAL_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "xml"}
READERS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet")  # before an optional .gz


# --- reading YAMLs (taskyaml) -------------------------------------------------------------------


def load(path: Path) -> Any:
    """One YAML as lm-eval loads it (before following `include:`), `!function` kept as text."""
    return parse(path).data


def yaml_files(root: Path, patterns: tuple[str, ...] = ("*.yaml", "*.yml")) -> list[Path]:
    """The YAML files under `root`, sorted, leaving out IGNORED_DIRS."""
    found = sorted(p for pattern in patterns for p in root.rglob(pattern) if p.is_file())
    return [p for p in found if not IGNORED_DIRS.intersection(p.relative_to(root).parts)]


def mappings(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping in a YAML document with its location: a task config may sit at the top or
    inline in a group's task list."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from mappings(value, f"{where}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from mappings(value, f"{where[:-1]}[{i}].")


def flatten(value: Any, field: str) -> Iterator[tuple[str, str]]:
    """Every string in a YAML value (a string, list or mapping) with its field path."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from flatten(v, f"{field}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, f"{field}.{k}")


# --- include: -----------------------------------------------------------------------------------


def included(cfg: Any, path: Path) -> list[Path]:
    """The files a config's `include:` names, as lm-eval resolves them: one path or a list,
    each absolute or relative to the folder of the YAML at `path`."""
    names = cfg.get("include") if isinstance(cfg, dict) else None
    listed = names if isinstance(names, list) else [names] if names else []
    return [
        Path(n) if Path(n).is_absolute() else path.parent / n for n in listed if isinstance(n, str)
    ]


def include_chain(path: Path | None, root: Path) -> list[str]:
    """The YAML that defines a task followed by the files it includes, recursively, relative to
    `root` where they are inside it."""
    if path is None:
        return []
    chain, todo = [], [path]
    while todo:
        p = todo.pop(0).resolve()
        rel = (
            p.relative_to(root.resolve()).as_posix() if p.is_relative_to(root.resolve()) else str(p)
        )
        if rel in chain or not p.is_file():
            continue
        chain.append(rel)
        todo += included(load(p), p)
    return chain


# --- data paths and their files -----------------------------------------------------------------


def data_refs(cfg: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    """(field, path) of every data path one task config names; `where` prefixes the fields."""
    kwargs = cfg.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        yield from flatten(kwargs.get("data_files"), f"{where}dataset_kwargs.data_files")
        if isinstance(kwargs.get("data_dir"), str):
            yield f"{where}dataset_kwargs.data_dir", kwargs["data_dir"]
    path = cfg.get("dataset_path")
    if isinstance(path, str) and path not in LOCAL_BUILDERS:
        yield f"{where}dataset_path", path  # a local folder if it exists, else a Hub name


def data_paths(cfg: dict[str, Any]) -> list[str]:
    """The data paths of a config whose local paths are already absolute (the copy lm-eval reads,
    see taskdir): a relative dataset_path there is a Hub name, not data."""
    return [v for f, v in data_refs(cfg, "") if f != "dataset_path" or Path(v).is_absolute()]


def candidates(value: str, yaml_dir: Path, root: Path) -> list[Path]:
    """Where a relative data path is looked for, in order: next to the YAML that names it (as
    lm-eval resolves `include:` and `!function`), then at the task folder's root."""
    return [(yaml_dir / value).resolve(), (root / value).resolve()]


def expand(path: str | Path) -> list[Path]:
    """The files a data path stands for: itself, the files of a directory (leaving out
    IGNORED_DIRS) or a glob's matches; [] when it names nothing that exists."""
    p = Path(path)
    if p.is_dir():
        return sorted(
            f
            for f in p.rglob("*")
            if f.is_file() and not IGNORED_DIRS.intersection(f.relative_to(p).parts)
        )
    if glob.has_magic(str(path)):
        return sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
    return [p] if p.is_file() else []


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and not IGNORED_DIRS.intersection(rel.parts):
            out[rel.as_posix()] = sha256(path)
    return out


# --- every data file of a folder (decontamination reads them all) -------------------------------


def task_data(root: Path) -> tuple[dict[Path, list[dict[str, Any]]], list[str]]:
    """({data file: the configs of the tasks that read it, includes merged}, the YAMLs read).

    Data is the files the task YAMLs name, nothing else: YAMLs are configs, and READMEs or code
    are neither. A task's data paths stay relative to the YAML that names them, an included one
    too, and are resolved as the evaluate stage resolves them (`candidates`).
    """
    found: dict[Path, list[dict[str, Any]]] = {}
    read: list[str] = []
    # Includes stay inside the folder, as the evaluate stage requires.
    taskinclude.check(root, yaml_files(root), who="eval_tasks: ", any_tag=True)
    for path in yaml_files(root):
        read.append(path.relative_to(root).as_posix())
        doc = _load_any(path)
        for where, mapping in mappings(doc, ""):
            # lm-eval merges a top-level `include:` under the YAML; data paths stay relative to
            # the file that names them.
            chain = [*_includes(mapping, path, 0), (path, mapping)] if not where else []
            chain = chain or [(path, mapping)]
            merged: dict[str, Any] = {}
            for _, cfg in chain:
                merged.update(cfg)
            for yaml_path, cfg in chain:
                for field_, value in data_refs(cfg, where):
                    for file in _resolve(value, yaml_path, root, field_):
                        known = found.setdefault(file, [])
                        if merged not in known:
                            known.append(merged)
    return dict(sorted(found.items())), read


def _load_any(path: Path) -> Any:
    return parse(path, any_tag=True, who="eval_tasks: ").data


def _includes(cfg: dict[str, Any], path: Path, depth: int) -> list[tuple[Path, dict[str, Any]]]:
    """The YAMLs `cfg` includes and theirs, base first (the order lm-eval merges them in);
    `task_data` checked first that each is a file inside the folder (taskinclude)."""
    if depth > 8:
        return []
    out: list[tuple[Path, dict[str, Any]]] = []
    for base in included(cfg, path):
        if not base.is_file():
            continue
        loaded = _load_any(base)
        if isinstance(loaded, dict):
            out += [*_includes(loaded, base, depth + 1), (base, loaded)]
    return out


def _resolve(value: str, yaml_path: Path, root: Path, where: str) -> list[Path]:
    """The files a data path names, looked for as the evaluate stage does."""
    if "://" in value:
        raise StageError(
            f"eval_tasks: {yaml_path}: {where}: '{value}' is a remote URL; decontamination (like "
            "evaluate) reads only files in the task folder; fix: download it into the folder "
            "and name it relative to the YAML"
        )
    is_dataset_path = where.endswith("dataset_path")
    resolved_root = root.resolve()
    for candidate in candidates(value, yaml_path.parent, root):
        if is_dataset_path and not candidate.is_dir():
            continue
        matches = expand(candidate)
        if not matches:
            continue
        outside = [m for m in matches if not m.is_relative_to(resolved_root)]
        if outside:
            raise StageError(
                f"eval_tasks: {yaml_path}: {where}: '{value}' points outside the task folder "
                f"{root} ({outside[0]}); decontamination checks only the folder's files, and "
                "the evaluate stage would refuse a task whose data was not checked; fix: copy "
                "the data into the folder and name it relative to the YAML"
            )
        return [root / m.relative_to(resolved_root) for m in matches]
    if is_dataset_path:
        return []  # not a local folder: a Hub dataset name, which evaluate rejects by itself
    raise StageError(
        f"eval_tasks: {yaml_path}: {where}: '{value}' does not exist (looked next to the YAML "
        f"and at {root}); fix: put the data file in the task folder and name it relative to "
        "the YAML"
    )


# --- the rows of a data file --------------------------------------------------------------------


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(n, row) of every row of a data file: n is the JSONL/text line or the row (1-based).

    A row is a JSONL line, an element of a JSON array (or of a list under a JSON object's only
    key), a CSV or Parquet row, or a line of a text file, as the `datasets` builders read them.
    """
    name = path.name.lower()
    suffix = next((s for s in READERS if name.endswith(s) or name.endswith(s + ".gz")), None)
    if suffix is None:
        raise StageError(
            f"eval_tasks: {path}: decontamination cannot read this kind of file (it reads "
            f"{', '.join(READERS)}, optionally .gz); fix: convert the task data to JSONL"
        )
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from enumerate(pq.read_table(path).to_pylist(), 1)
            return
        raw = path.read_bytes()
        content = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")
        if suffix == ".txt":  # as the `text` builder reads it: one row per line
            yield from ((i, {"text": line}) for i, line in enumerate(content.splitlines(), 1))
        elif suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            yield from enumerate(csv.DictReader(io.StringIO(content), delimiter=delimiter), 1)
        elif suffix == ".json" and (doc := _json_document(content)) is not None:
            yield from enumerate(_json_rows(doc), 1)
        else:  # JSON lines (the `datasets` json builder reads a .json file either way)
            for i, line in enumerate(content.splitlines(), 1):
                if line.strip():
                    yield i, json.loads(line)
    except (ValueError, OSError, EOFError) as e:  # JSONDecodeError, UnicodeDecodeError, gzip
        raise StageError(
            f"eval_tasks: cannot read {path}: {e}; fix: the task data must be valid UTF-8 "
            f"{suffix.lstrip('.').upper()} (as lm-eval reads it)"
        ) from e


def _json_document(content: str) -> Any | None:
    """A .json file parsed as one document, or None if it is JSON lines."""
    try:
        return json.loads(content)
    except ValueError:
        return None


def _json_rows(doc: Any) -> list[Any]:
    """Rows of a JSON document: an array's elements, the records under an object's only key
    ({"data": [{...}, ...]}), or else the document as one row."""
    if isinstance(doc, dict) and len(doc) == 1:
        (value,) = doc.values()
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            return value
    return doc if isinstance(doc, list) else [doc]
