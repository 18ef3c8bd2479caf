"""Reading and checking post-training data: JSONL rows into the examples TRL's trainers take.

Runs in the driver, before Ray Train starts, so that a bad row costs the user a second, not a
worker group's start-up, and the error names the file, the line and the field and says what to
do. The person reading it owns the data, not Cairn's code.

Accepted rows (one JSON object per line; other fields, such as an id, are ignored):

- sft: `{"messages": [{"role", "content"}, ...]}` with roles system/user/assistant and at least
  one assistant turn (every assistant turn is trained), or `{"prompt", "completion"}` where the
  prompt is a string (one user turn) or a list of system/user turns; it becomes the same chat
  with the completion as its one trained assistant turn.
- dpo: `{"prompt", "chosen", "rejected"}`; the prompt as for sft (it may also hold earlier
  assistant turns and must end with a user turn), chosen and rejected the two candidate replies.

Every example leaves here in TRL's conversational form, so the chat template decides the layout.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from cairn.errors import StageError
from cairn.stage import InputArtifact

ROLES = ("system", "user", "assistant")
SUFFIXES = (".jsonl", ".jsonl.gz")


class RowForm(Protocol):
    """What makes a row valid for one kind: its recipe (recipe.py) is one."""

    kind: str

    def row(self, row: Row, obj: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Example:
    """One checked row: where it came from (for later messages) and its TRL form."""

    origin: str  # "<file as the user named it>:<line>"
    fields: dict[str, Any]


def read_examples(
    artifact: InputArtifact, recipe: RowForm, reserved: Iterable[str] = ()
) -> list[Example]:
    """Every row of `artifact` (a .jsonl file or a directory of them) as a checked example.

    `reserved` are the tokenizer's special-token strings: text that contains one would be read as
    that token, silently breaking the turn structure, so such a row is an error.
    """
    reserved = tuple(reserved)
    examples = []
    for path, label in _files(artifact):
        for lineno, obj in _objects(path, label):
            row = Row(f"{label}:{lineno}", reserved)
            examples.append(Example(row.where, recipe.row(row, obj)))
    if not examples:
        raise StageError(
            f"{recipe.kind}: input 'data' ({_label(artifact)}) holds no rows; fix: give a .jsonl file "
            "with one JSON object per line"
        )
    return examples


def _label(artifact: InputArtifact) -> str:
    return artifact.name or str(artifact.path)


def _files(artifact: InputArtifact) -> list[tuple[Path, str]]:
    path, label = Path(artifact.path), _label(artifact)
    if path.is_file():
        if not path.name.lower().endswith(SUFFIXES):
            raise StageError(
                f"{label}: '{path.name}' is not a .jsonl file; fix: give a .jsonl (or .jsonl.gz) "
                "file, or a directory of them"
            )
        return [(path, label)]
    if not path.is_dir():
        raise StageError(f"{label}: {path} does not exist; fix: check the input's path")
    files = []
    for p in sorted(path.rglob("*"), key=lambda p: p.relative_to(path).as_posix()):
        rel = p.relative_to(path).as_posix()
        hidden = any(part.startswith(".") for part in rel.split("/"))  # .git, editor swap files
        # Other files (a README beside the data, say) are skipped, not errors.
        if p.is_file() and p.name.lower().endswith(SUFFIXES) and not hidden:
            files.append((p, f"{label}/{rel}"))
    if not files:
        raise StageError(
            f"{label}: no .jsonl files in {path}; fix: put the data in .jsonl files (one JSON "
            "object per line)"
        )
    return files


def _open(path: Path) -> IO[bytes]:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _objects(path: Path, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    lineno = 0
    try:
        with _open(path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1:
                    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a byte order mark some editors write
                obj = _parse(raw, f"{label}:{lineno}")
                if obj is not None:
                    yield lineno, obj
    except (OSError, EOFError) as e:  # unreadable, or a truncated .gz
        raise StageError(f"{label}:{lineno + 1}: cannot read the file ({e}); replace it") from e


def _parse(raw: bytes, where: str) -> dict[str, Any] | None:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StageError(f"{where}: not valid UTF-8 ({e.reason}); fix: re-encode as UTF-8") from e
    if not line.strip():
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise StageError(
            f"{where}: not valid JSON ({e.msg}, column {e.colno}); fix the line or remove it"
        ) from e
    if not isinstance(obj, dict):
        raise StageError(
            f"{where}: expected a JSON object, got a {type(obj).__name__}; fix: write one object "
            "per line"
        )
    return obj


class Row:
    """The checks of one row; every message starts with `where` (file:line) and names the field."""

    def __init__(self, where: str, reserved: tuple[str, ...]) -> None:
        self.where = where
        self.reserved = reserved

    def error(self, field: str, problem: str, fix: str) -> StageError:
        return StageError(f"{self.where}: field `{field}` {problem}; fix: {fix}")

    # --- the parts ----------------------------------------------------------------------------

    def prompt(self, value: Any, roles: tuple[str, ...]) -> list[dict[str, str]]:
        """A prompt given as a string (one user turn) or as a list of turns with `roles`."""
        if isinstance(value, str):
            if not value.strip():
                raise self.error("prompt", "is empty", "write the prompt's text")
            self.text(value, "prompt")
            return [{"role": "user", "content": value}]
        if isinstance(value, list):
            return self.messages(value, "prompt", roles)
        raise self.error(
            "prompt",
            f"is a {type(value).__name__}",
            'make it a string or a list of {"role": ..., "content": ...} turns',
        )

    def reply(self, value: Any, name: str) -> str:
        """A reply given as a string, or as a list holding one assistant turn (TRL's other form)."""
        if (
            isinstance(value, list)
            and len(value) == 1
            and isinstance(value[0], dict)
            and value[0].get("role") == "assistant"
        ):
            value, name = value[0].get("content"), f"{name}[0].content"
        if not isinstance(value, str):
            raise self.error(
                name, f"is {_show(value)}, not a string", "make it the reply's text (a string)"
            )
        if not value.strip():
            raise self.error(name, "is an empty assistant turn", "write the reply, or drop the row")
        self.text(value, name)
        return value

    def messages(self, value: Any, name: str, roles: tuple[str, ...]) -> list[dict[str, str]]:
        if not isinstance(value, list) or not value:
            raise self.error(
                name,
                f"is {_show(value)}, not a non-empty list of turns",
                'write the turns in order as [{"role": ..., "content": ...}, ...]',
            )
        out = []
        for i, message in enumerate(value):
            at = f"{name}[{i}]"
            if not isinstance(message, dict):
                raise self.error(
                    at, f"is a {type(message).__name__}", 'write {"role": ..., "content": ...}'
                )
            role = message.get("role")
            if role not in roles:
                allowed = ", ".join(roles)
                hint = ""
                if role == "assistant":  # an assistant turn inside an sft prompt
                    hint = "; for a chat whose assistant turns are all trained, use `messages`"
                raise self.error(
                    f"{at}.role", f"is {_show(role)}, not one of {allowed}", f"use {allowed}{hint}"
                )
            content = message.get("content")
            if not isinstance(content, str):
                raise self.error(
                    f"{at}.content", f"is {_show(content)}", "make it the turn's text (a string)"
                )
            if role == "assistant" and not content.strip():
                raise self.error(
                    f"{at}.content",
                    "is an empty assistant turn",
                    "write the reply, or drop the turn",
                )
            self.text(content, f"{at}.content")
            out.append({"role": role, "content": content})
        return out

    def text(self, text: str, field: str) -> None:
        """Text may not spell a special token: the tokenizer would read it as that token."""
        hit = next((t for t in self.reserved if t in text), None)
        if hit is not None:
            raise self.error(
                field,
                f"contains {hit}, a special token of the model's tokenizer (it would open or "
                "close a turn)",
                "remove it from the text",
            )


def fields(obj: dict[str, Any]) -> str:
    """The fields a row has, for a message about the ones it lacks."""
    return ", ".join(f"`{k}`" for k in list(obj)[:8]) or "no fields"


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
