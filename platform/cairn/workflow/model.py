"""The workflow file's data model: the YAML's shape as written, and the validated `Workflow`.

Input references are either `step.output` (an earlier step's output) or an external source: a
path starting with `/`, `./`, `../` or `~`, or a URI with a scheme (`s3://…`, `file://…`).
Relative paths are relative to the workflow file. An external source may also be written as a
mapping that states its licence, `{source: ./base-model, license: apache-2.0}`: the licence is a
statement about the data, not part of its content digest, and travels with the source through
the lineage to the release's cards. The checks that turn the one into the other live in
`checks.py`.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cairn.stage import Resources, StageConfig, StageSpec

NAME_RE = r"^[a-z][a-z0-9_-]{0,62}$"


# The keys of an external source written as a mapping (`{source: PATH, license: SPDX}`).
SOURCE_KEYS = ("source", "license")


def _ref_text(value: Any) -> Any:
    # Checked up front so a wrong value gets one error, not one per branch of the union. A
    # mapping's keys are checked by `checks.py`, which can point at the line of a wrong key.
    # A mapping that names neither key is not meant as a source at all: one error for the
    # whole value, not one per key.
    def one(x: Any) -> bool:
        return isinstance(x, str) or (isinstance(x, dict) and any(k in x for k in SOURCE_KEYS))

    if one(value) or (isinstance(value, list) and all(one(x) for x in value)):
        return value
    raise ValueError(
        f"an input must be a `step.output`, a path, or a list of them, not {reprlib.repr(value)}; "
        "fix: write `<step>.<output>`, a path such as ./data.jsonl, or "
        "`{source: ./data.jsonl, license: cc-by-4.0}` to state a source's licence"
    )


RefItem = str | dict[str, Any]
RefText = Annotated[RefItem | list[RefItem], BeforeValidator(_ref_text)]


def ref_texts(raw: RefItem | list[RefItem]) -> list[str]:
    """The references an input names, as text (a mapping's `source`), for the checks that only
    need to know which steps an input reads."""
    items = raw if isinstance(raw, list) else [raw]
    return [str(x.get("source", "")) if isinstance(x, dict) else x for x in items]


class StepModel(BaseModel):
    """One step as written in the file (config checked later, against its kind)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="stage kind, e.g. curate or pretrain")
    inputs: dict[str, RefText] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    resources: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(0, ge=0, le=10)
    cache: bool = True


class WorkflowModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_RE)
    version: str | int = "1"
    description: str = ""
    steps: dict[str, StepModel] = Field(min_length=1)


@dataclass(frozen=True)
class Ref:
    """A resolved input reference: an earlier step's output, or an external source."""

    text: str
    step: str | None = None
    output: str | None = None
    uri: str | None = None  # external: absolute local path or fsspec URI
    license: str | None = None  # external: the licence the workflow states for it

    @property
    def external(self) -> bool:
        return self.uri is not None


@dataclass
class Step:
    name: str
    kind: str
    spec: StageSpec
    config: StageConfig
    inputs: dict[str, list[Ref]]
    resources: Resources
    retries: int
    cache: bool
    line: int | None = None

    def upstream(self) -> list[str]:
        return sorted({r.step for refs in self.inputs.values() for r in refs if r.step})


@dataclass
class Workflow:
    """A validated workflow file (`cairn.load_workflow`): its steps in topological order, each
    with its stage spec, config, resolved inputs and resources; `digest` is the sha256 of the
    file's text."""

    name: str
    version: str
    description: str
    path: Path
    text: str
    steps: dict[str, Step]  # in topological order
    digest: str = field(default="")

    def order(self) -> list[str]:
        return list(self.steps)


def is_external(ref: str) -> bool:
    return "://" in ref or ref.startswith(("/", "./", "../", "~"))


def is_uri(ref: str) -> bool:
    """An fsspec URL (`s3://…`, `simplecache::s3://…`): external, but not a local path or a
    `file://` one."""
    return (
        is_external(ref) and "://" in ref and not ref.startswith(("file://", "/", "./", "../", "~"))
    )
