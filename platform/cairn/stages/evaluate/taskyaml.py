"""One lm-eval task YAML read as data: `!function` kept as text, every failure named by line.

lm-eval loads task YAMLs with one custom tag, `!function module.name`, which it resolves by
importing `module.py` from beside the YAML. Both of Cairn's readers of task folders (evaluate's
`taskdir`, curate's decontamination through `taskfolder`) read them here instead, where the tag
is only a string (`Function`) and where each one was written is kept (`Parsed.functions`), so
evaluate can refuse the Python before lm-eval sees the folder (`taskcode`).

A YAML that cannot be read is a `StageError` naming the file, the line and the YAML problem:
lm-eval skips such a file without a word, and the tasks it defined then "do not exist". A file is
data someone else may have written, so one that would cost unbounded time or memory to walk (an
alias bomb of a few hundred bytes, an alias inside itself, nesting deeper than the parser follows)
is refused the same way, before anything walks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cairn.errors import StageError


class Function(str):
    """A `!function module.name` value: Python, so never a template to render; kept as written
    so that a rewritten YAML round-trips."""


class Loader(yaml.SafeLoader):
    """Safe loading, plus lm-eval's one custom tag: what lm-eval itself can load."""


class Dumper(yaml.SafeDumper):
    """Writes `Function` values back as `!function`."""


def _load_function(loader: yaml.SafeLoader, node: yaml.Node) -> Function:
    return Function(loader.construct_scalar(node))  # type: ignore[arg-type]


def _dump_function(dumper: yaml.SafeDumper, value: Function) -> yaml.Node:
    return dumper.represent_scalar("!function", str(value))


Loader.add_constructor("!function", _load_function)
Dumper.add_representer(Function, _dump_function)


class _AnyTagLoader(yaml.SafeLoader):
    """For reading only: `!function` and any other tag kept as plain values (a scalar as a
    `Function`), so one unusual YAML does not hide the data the folder's other tasks name."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return Function(loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)  # type: ignore[arg-type]


_AnyTagLoader.add_multi_constructor("!", _tagged)


@dataclass(frozen=True)
class Parsed:
    """One YAML file as read: its data, and the `!function` tags in it by line."""

    data: Any
    functions: list[tuple[int, str]]  # (1-based line, "module.name") of every `!function`


def parse(path: Path, *, any_tag: bool = False, who: str = "") -> Parsed:
    """Read one task YAML (before following `include:`); nothing in it is run.

    `any_tag`: keep any tag as a plain value (decontamination reads what it can), else only
    `!function` is known (what lm-eval loads). A file that cannot be read raises `StageError`
    naming it, the line and the YAML problem; `who` prefixes the message ("eval_tasks: ").
    """
    remove = (
        "or remove the file from the task folder (lm-eval skips a file it cannot read, and the "
        "tasks it defines then do not exist)"
    )
    try:
        loader = (_AnyTagLoader if any_tag else Loader)(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise StageError(
            f"{who}{path}: not UTF-8 text (byte {e.start}: {e.reason}); fix: save it as UTF-8, "
            f"{remove}"
        ) from e
    except OSError as e:
        raise StageError(
            f"{who}{path}: cannot be read ({e}); fix: make it readable, {remove}"
        ) from e
    try:
        node = loader.get_single_node()
        if node is None:
            return Parsed(None, [])
        unbounded = _unbounded(node)
        if unbounded is not None:
            line, problem = unbounded
            where = f"{path}:{line}" if line else str(path)
            raise StageError(f"{who}{where}: {problem}; fix: write it out plainly, {remove}")
        return Parsed(loader.construct_document(node), _functions(node))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        what = str(e.problem or e.context)
        if e.problem and e.context:  # e.g. "while parsing a flow sequence", where it began
            began = f" at line {e.context_mark.line + 1}" if e.context_mark is not None else ""
            what += f" ({e.context}{began})"
        raise StageError(
            f"{who}{where}: not valid YAML: {what}; fix: correct the YAML there, {remove}"
        ) from e
    except yaml.YAMLError as e:
        raise StageError(f"{who}{path}: not valid YAML: {e}; fix: correct it, {remove}") from e
    except RecursionError as e:
        raise StageError(
            f"{who}{path}: nested too deeply for a task config (the YAML parser gave up); fix: "
            f"flatten it, {remove}"
        ) from e
    finally:
        loader.dispose()


# A task YAML is tens of lines. A few hundred bytes of aliases can stand for billions of nodes,
# which every walk of the loaded data (ours, lm-eval's) would visit: refuse past this many.
MAX_NODES = 100_000


def _unbounded(root: yaml.Node) -> tuple[int | None, str] | None:
    """(line or None, why) walking the document under `root` would not end in reasonable time,
    or None.

    Counts nodes as a walk sees them (an alias as the whole node it repeats) without expanding
    anything: each distinct node's size is computed once."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise _SelfReference(node)
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                break
        open_.discard(key)
        sizes[key] = total
        return total

    try:
        total = size(root)
    except _SelfReference as e:
        return e.node.start_mark.line + 1, "an alias refers to the node that contains it"
    if total > MAX_NODES:
        return None, (
            f"its aliases expand to more than {MAX_NODES:,} values (an alias bomb?); a task "
            "config is far smaller"
        )
    return None


class _SelfReference(Exception):
    def __init__(self, node: yaml.Node) -> None:
        self.node = node


def _functions(root: yaml.Node) -> list[tuple[int, str]]:
    """(line, value) of every `!function` scalar under `root`, each node once."""
    found, seen, todo = [], set(), [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and node.tag == "!function":
            found.append((node.start_mark.line + 1, str(node.value)))
        elif isinstance(node, yaml.SequenceNode):
            todo += node.value
        elif isinstance(node, yaml.MappingNode):
            todo += [n for pair in node.value for n in pair]
    return sorted(found)


def function_file(value: str, yaml_path: Path) -> Path | None:
    """The Python file a `!function module.name` in the YAML at `yaml_path` runs, found as
    lm-eval finds it (`module` relative to the YAML's folder, dots as folders); None when there
    is no such file, and lm-eval would import `module` from the installed packages instead."""
    module = value.rpartition(".")[0]
    if not module:
        return None
    candidate = (yaml_path.parent / f"{module.replace('.', '/')}.py").resolve()
    return candidate if candidate.is_file() else None
