"""Reading a workflow file's YAML safely: bounded in size, depth and alias expansion, and with
YAML 1.2's plain scalars.

A workflow file may come from anyone (a colleague, a pull request, a web page), and the same
reader serves `cairn validate`, `run` and `submit`. PyYAML's own loaders trust the file: a few
hundred bytes of nested aliases (an "alias bomb") expand into billions of values, an alias inside
its own anchor builds a loop that recursive walks never leave, and deep nesting ends in a
`RecursionError`. This loader composes the file once, counting as it goes, and refuses such a
file before anything walks it: the expanded size of every node is known when the node is
finished (memoised, so counting is linear in the file), and an alias adds its target's size.

PyYAML also reads plain scalars by YAML 1.1's rules, where `yes`, `no`, `on` and `off` are
booleans, `010` is 8 and `1:30` is 90. A workflow means what YAML 1.2's core schema says:
only true/false are booleans, and numbers are decimal (or 0o / 0x).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_CHARS = 1 << 20  # a workflow is a few KB
MAX_DEPTH = 50  # a workflow nests about 6 levels
MAX_VALUES = 10_000  # values after expanding aliases; the quickstart has a few hundred

TAG = "tag:yaml.org,2002:"
KEY_KINDS = {"null": "null", "bool": "a boolean", "int": "a number", "float": "a number"}


@dataclass
class Refused(Exception):
    """The file cannot be read as a workflow's YAML: where, what and what to do."""

    line: int | None
    message: str
    fix: str
    field: str = "(syntax)"


class Document:
    """A composed document: first its node graph (for line numbers), then `construct()` its data.

    Read the node before constructing: construction flattens merge keys (`<<: *defaults`) into
    the mappings that hold them, in place. `retyped` holds the mapping keys that YAML read as
    something other than text (`null:`, `1:`, `true:`), by `id()` of their node, with what YAML
    read them as; they are constructed as their text so the checks can name them."""

    def __init__(self, loader: _Loader, node: yaml.Node | None) -> None:
        self.loader = loader
        self.node = node
        self.retyped = _retype_keys(node) if node is not None else {}

    def construct(self) -> Any:
        """The document's data, or `Refused` (a value its tag cannot make, e.g. `!!int abc`)."""
        if self.node is None:
            return None
        try:
            return self.loader.construct_document(self.node)
        except yaml.YAMLError as e:
            raise _syntax(e) from None
        finally:
            self.loader.dispose()


def compose(text: str) -> Document:
    """Compose `text` (one YAML document) within the limits, or raise `Refused`."""
    if len(text) > MAX_CHARS:
        raise Refused(
            None,
            f"the file is {len(text) / (1 << 20):.1f} MiB; a workflow file is at most "
            f"{MAX_CHARS >> 20} MiB",
            "check that this is the workflow file; keep data in files its inputs point to",
            "(file)",
        )
    try:
        loader = _Loader(text)  # checks every character first
    except yaml.reader.ReaderError as e:
        raise _unreadable(text, e) from None
    try:
        return Document(loader, loader.get_single_node())
    except yaml.YAMLError as e:
        loader.dispose()
        raise _syntax(e) from None
    except Refused:
        loader.dispose()
        raise


def _line_at(text: str, offset: int) -> int:
    """The 1-based line of character `offset` in `text`."""
    return text.count("\n", 0, offset) + 1


def _syntax(e: yaml.YAMLError) -> Refused:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return Refused(
        mark.line + 1 if mark else None,
        f"not valid YAML: {problem}",
        "fix the indentation or quoting at that line",
    )


def _unreadable(text: str, e: yaml.reader.ReaderError) -> Refused:
    char = e.character if isinstance(e.character, str) else chr(e.character)
    return Refused(
        _line_at(text, e.position),
        f"character U+{ord(char):04X} ({char!r}) is not allowed in a YAML file",
        "remove it: a workflow is plain text (was a binary file given?)",
    )


def _line(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark else None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _retype_keys(root: yaml.Node) -> dict[int, str]:
    """Mark every non-text scalar key to be constructed as its text (see `Document`).

    Every mapping key in a workflow is a name; `null:` read as None would reach the checks as a
    step called "None" on the wrong line. Visits each distinct node once (aliases share nodes)."""
    retyped: dict[int, str] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                kind = key.tag.removeprefix(TAG)
                if kind not in ("str", "merge", "value"):
                    retyped[id(key)] = KEY_KINDS.get(kind, kind)
                    key.tag = TAG + "str"
        stack.extend(_children(node))
    return retyped


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts while it composes (see the module docstring) and reads plain
    scalars by YAML 1.2's core schema."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0  # nesting as written
        self.values = 0  # values after expanding aliases, so far
        self.aliases = 0
        self.open: set[str] = set()  # anchors whose node is still being composed
        self.size: dict[int, int] = {}  # id(node) → its values, aliases expanded
        self.deep: dict[int, int] = {}  # id(node) → its depth, aliases expanded

    def get_single_node(self) -> yaml.Node | None:
        self.get_event()  # stream start
        document = None
        if not self.check_event(yaml.StreamEndEvent):
            document = self.compose_document()
        if not self.check_event(yaml.StreamEndEvent):
            event = self.get_event()
            raise Refused(
                _line(event.start_mark),
                "a second YAML document starts here; a workflow file holds one",
                "remove the `---` line and what follows it, or move that into a file of its own",
                "(yaml)",
            )
        self.get_event()
        return document

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            if event.anchor in self.open:
                raise Refused(
                    _line(event.start_mark),
                    f"alias *{event.anchor} refers to the value that holds it (a loop)",
                    f"write the values out instead of *{event.anchor}",
                    "(yaml)",
                )
            node = super().compose_node(parent, index)
            self.aliases += 1
            self._count(self.size[id(node)], event.start_mark)  # its target is complete
            return node
        event = self.peek_event()
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Refused(
                _line(event.start_mark),
                f"values are nested more than {MAX_DEPTH} levels deep",
                "flatten it: a workflow needs a handful of levels (steps, a step, its config)",
                "(yaml)",
            )
        if event.anchor is not None:
            self.open.add(event.anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.open.discard(event.anchor)
        if node is None:  # the base class's type; a node event always composes a node
            return None
        children = _children(node)
        self.size[id(node)] = 1 + sum(self.size[id(c)] for c in children)
        self.deep[id(node)] = 1 + max((self.deep[id(c)] for c in children), default=0)
        if self.deep[id(node)] > MAX_DEPTH:
            raise Refused(
                _line(node.start_mark),
                f"YAML aliases nest values more than {MAX_DEPTH} levels deep",
                "write the values out, or use fewer aliases inside aliased values",
                "(yaml)",
            )
        if isinstance(node, yaml.MappingNode):
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    raise Refused(
                        _line(key.start_mark),
                        "a key here is a list or a mapping; keys in a workflow are names",
                        "write a plain name before the colon, e.g. `train:`",
                        "(yaml)",
                    )
        self._count(1, node.start_mark)
        return node

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self.values += n
        if self.values <= MAX_VALUES:
            return
        if self.aliases:
            raise Refused(
                _line(mark),
                f"YAML aliases expand to more than {MAX_VALUES} values (an alias bomb?)",
                "write the values out, or use fewer aliases",
                "(yaml)",
            )
        raise Refused(
            _line(mark),
            f"the file holds more than {MAX_VALUES} values; a workflow has a few hundred",
            "check that this is the workflow file; keep data in files its inputs point to",
            "(yaml)",
        )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # An explicit tag can make a constructor fail outside YAMLError (`!!int abc` is a
        # ValueError, `!!timestamp x` an AttributeError, a 5,000-digit number exceeds Python's
        # limit): name the value and its line instead.
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as e:
            kind = node.tag.removeprefix(TAG)
            raise Refused(
                _line(node.start_mark),
                f"cannot read {_short(node.value)} as {kind}: {str(e).partition(':')[0]}",
                f"write a value that reads as {kind}, or quote it to keep it as text",
            ) from e


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if digits.startswith(("0o", "0x")):
        return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
    return sign * int(digits, 10)


def _float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = str(loader.construct_scalar(node)).lower()  # type: ignore[arg-type]
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}
    return special[text] if text in special else float(text)


def _core_schema() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """YAML 1.2 core schema resolvers (spec 10.3.2) in place of PyYAML's 1.1 ones for booleans,
    numbers and null; timestamps stay text. Merge keys (`<<`) keep working."""
    replaced = {TAG + t for t in ("bool", "int", "float", "null", "timestamp")}
    resolvers = {
        first: [(tag, rx) for tag, rx in pairs if tag not in replaced]
        for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    core = [
        ("null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
        ("bool", r"true|True|TRUE|false|False|FALSE", list("tTfF")),
        ("int", r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
        (
            "float",
            r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)",
            list("-+.0123456789"),
        ),
    ]
    for tag, pattern, firsts in core:
        rx = re.compile(f"^(?:{pattern})$")
        for first in firsts:
            resolvers.setdefault(first, []).append((TAG + tag, rx))
    return resolvers


def _undefined(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    # SafeLoader refuses `!!python/object/apply:os.system [...]` and other tags too; this says
    # so in words the reader can act on.
    tag = "!!" + node.tag.removeprefix(TAG) if node.tag.startswith(TAG) else node.tag
    raise Refused(
        _line(node.start_mark),
        f"the tag {_short(tag)} is not allowed in a workflow",
        "remove it: a workflow holds plain text, numbers, true/false, lists and mappings",
        "(yaml)",
    )


_Loader.yaml_implicit_resolvers = _core_schema()
_Loader.add_constructor(None, _undefined)
_Loader.add_constructor(TAG + "int", _int)
_Loader.add_constructor(TAG + "float", _float)
