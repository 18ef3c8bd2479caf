"""The stage protocol: what every stage kind declares, and how its config says what is identity.

A stage kind is a `StageSpec`: a pydantic config model, the artifact types it takes and makes,
default resources, how the engine places it, and one function `run(config, inputs, ctx) ->
outputs`. `register(spec)` (registry.py) makes it a kind workflows can name.

A config field that does not change the step's result (logging cadence, restarts, a port) is
declared `Runtime[...]`: it stays out of the step's fingerprint, so changing it reuses the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cairn.errors import SpecIssue
from cairn.stage.artifacts import ArtifactType, InputArtifact
from cairn.stage.context import RunFn
from cairn.stage.numbers import refuse_loose_numbers
from cairn.stage.resources import Resources

T = TypeVar("T")


class _RuntimeMarker:
    """Pydantic field metadata: this field does not change results (see `Runtime`)."""

    def __repr__(self) -> str:
        return "Runtime"


RUNTIME = _RuntimeMarker()
# `log_every: Runtime[int] = Field(10, ...)`: a field left out of the step's fingerprint.
Runtime = Annotated[T, RUNTIME]


class StageConfig(BaseModel):
    """Base of every stage's config model: unknown fields are errors, not silently ignored, and
    a number field takes neither true/false nor .inf/.nan (see `cairn.stage.numbers`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: Any, info: ValidationInfo) -> Any:
        return refuse_loose_numbers(cls, info.field_name or "", value)

    @classmethod
    def runtime_fields(cls) -> list[str]:
        """The fields declared `Runtime[...]`, which do not enter the fingerprint."""
        return [n for n, info in cls.model_fields.items() if RUNTIME in info.metadata]

    def identity(self) -> dict[str, Any]:
        """The config fields that change the result, as plain JSON-able data."""
        data = self.model_dump(mode="json")
        for name in self.runtime_fields():
            data.pop(name, None)
        return data


class TrainerConfig(StageConfig):
    """The runtime fields every training kind has: how often it logs, how often Ray Train may
    restart its worker group, and how many checkpoints it keeps. None changes the weights."""

    log_every: Runtime[int] = Field(10, ge=1, description="steps between train metrics")
    max_failures: Runtime[int] = Field(
        2,
        ge=-1,
        description="worker-group restarts from the last checkpoint before failing; -1: unlimited",
    )
    keep_checkpoints: Runtime[int | None] = Field(
        None, ge=1, description="keep only the newest N checkpoints; default all"
    )


@dataclass(frozen=True)
class InputSlot:
    """A named input of a stage: the artifact type it accepts and whether it takes several."""

    type: ArtifactType
    many: bool = False
    optional: bool = False
    doc: str = ""


Launcher = Literal["task", "trainer", "driver"]


@dataclass(frozen=True)
class Reuse:
    """A stage's answer to "does this cached result still stand for the step, now?", with the
    reason, which the engine writes into the run's events either way."""

    ok: bool
    why: str


# `reusable(config, cached) -> Reuse`: the step's config (runtime fields included) and its
# verified cached outputs by name, as a stage reads its inputs.
ReusableFn = Callable[[Any, dict[str, InputArtifact]], Reuse]
# `check_inputs(config, files) -> issues`: the step's config and, per input slot, the local files
# or folders the workflow names for it (step outputs and URLs are not there yet).
InputCheck = Callable[[Any, dict[str, list[Path]]], list[SpecIssue]]


@dataclass(frozen=True)
class StageSpec:
    """Everything the engine needs to know about a stage kind.

    `launcher` says how the engine places the stage's driver: "task" runs it as one Ray task with
    the step's resources; "trainer" runs it as a zero-CPU task that starts its own Ray Train
    workers with the step's resources (so the driver does not take a CPU its workers need);
    "driver" runs it as a zero-CPU task whose Ray Data tasks use up to the step's resources.
    `result_packages` are the packages whose versions change results and so enter the fingerprint.
    `cacheable=False` makes the step run every time (its output describes something live).
    `reusable(config, cached) -> Reuse`, where given, is asked on every cache hit whether the
    cached outputs still stand for the step as configured now, runtime fields included: an
    output that describes something outside the store (a server kept running) may be gone, or
    not be what this run asks for (a stopped server's record, when the run wants one kept). The
    engine tries earlier results of the same fingerprint too, newest first, and runs the step
    when the kind accepts none.
    `shared_code` names modules or packages outside the kind's own folder whose source changes
    its results (e.g. `cairn.stage.raytrain`): they enter its code version too.
    `elastic=True`: the stage accepts `resources.num_workers: min..max` (Ray Train elastic).
    `reads_compute=True` gives the stage `ctx.compute`: what every ancestor artifact's step cost
    (the release publishes it).
    `check_inputs(config, files) -> issues`, where given, is `cairn validate`'s look inside the
    files a workflow names as the step's inputs (rlvr: every row has a verifier), so that bad
    data is refused with its file and line before Ray starts; the stage checks them again when
    it runs (data made by an earlier step is only there then).
    `reads_licenses=True`: the stage states the licences of the sources it descends from (the
    release's cards): `ctx.ancestry` gives each source the licence the workflow states for it now,
    and those licences are part of the step's fingerprint (stating or changing one makes a new
    release, and retrains nothing).
    `uses_gpus=False`: the stage never computes on a GPU, so validation refuses a step that asks
    for one (the request would be dropped, or hold a GPU idle), as it refuses any request the
    step cannot use.
    `optional_outputs` ({output: config field}): an output the step makes only when that field
    of its config is set (not None), e.g. post-training's `adapter` only with `lora`.
    `outputs_for(config)` is what one step makes: the engine requires exactly those to be
    written and a cache hit to have them, and validation refuses a reference to one the
    referenced step does not make, naming the field to set.
    `output_parents` ({output: (other outputs of the same step)}): an output made from
    siblings, which are sealed first and recorded among its parents, so the lineage reads how
    it was made (the merged `model` names the `adapter` merged into its base).
    """

    kind: str
    config_model: type[StageConfig]
    inputs: dict[str, InputSlot]
    outputs: dict[str, ArtifactType]
    run: RunFn
    default_resources: Resources = field(default_factory=Resources)
    launcher: Launcher = "task"
    result_packages: tuple[str, ...] = ()
    shared_code: tuple[str, ...] = ()
    cacheable: bool = True
    reusable: ReusableFn | None = None
    check_inputs: InputCheck | None = None
    reads_compute: bool = False
    reads_licenses: bool = False
    elastic: bool = False
    uses_gpus: bool = True
    optional_outputs: dict[str, str] = field(default_factory=dict)
    output_parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self) -> None:
        for name, config_field in self.optional_outputs.items():
            if name not in self.outputs:
                raise ValueError(
                    f"stage kind '{self.kind}': optional output '{name}' is not "
                    "one of its outputs; fix: declare it in `outputs`"
                )
            if config_field not in self.config_model.model_fields:
                raise ValueError(
                    f"stage kind '{self.kind}': optional output '{name}' depends on config "
                    f"field '{config_field}', which {self.config_model.__name__} lacks; fix: "
                    "name a field of the kind's config (one that is None when unset)"
                )
        for name, siblings in self.output_parents.items():
            for sibling in (name, *siblings):
                if sibling not in self.outputs:
                    raise ValueError(
                        f"stage kind '{self.kind}': output_parents names '{sibling}', which "
                        "is not one of its outputs; fix: declare it in `outputs`"
                    )
            if name in siblings or any(s in self.output_parents for s in siblings):
                # One level: a parent output is made from the inputs alone, so it is sealed
                # first without an order to work out.
                raise ValueError(
                    f"stage kind '{self.kind}': output '{name}' is made from outputs that are "
                    "themselves made from outputs (or from itself); keep it to one level"
                )

    def outputs_for(self, config: Any) -> dict[str, ArtifactType]:
        """The outputs a step with this (validated) config makes: every declared output but
        the optional ones whose config field is unset."""
        return {
            name: type_
            for name, type_ in self.outputs.items()
            if name not in self.optional_outputs
            or getattr(config, self.optional_outputs[name], None) is not None
        }

    def code_version(self) -> str:
        """sha256 of the stage's source: editing a stage invalidates its cache.

        A kind is its folder (`stages/pretrain/`: every module in it) or, for a kind written as
        one module, that module; plus every module of each `shared_code` module or package."""
        module = inspect.getmodule(self.run)
        h = hashlib.sha256()
        if module is None or module.__file__ is None:
            h.update(inspect.getsource(self.run).encode())
        else:
            path = Path(module.__file__)
            if path.name == "__init__.py":
                _hash_files(h, path.parent, sorted(path.parent.rglob("*.py")))
            else:
                _hash_files(h, path.parent, [path])
        for name in self.shared_code:
            shared = _source_file(self.kind, name)
            h.update(name.encode() + b"\0")
            if shared.name == "__init__.py":
                _hash_files(h, shared.parent, sorted(shared.parent.rglob("*.py")))
            else:
                h.update(shared.read_bytes())
        return h.hexdigest()


def _source_file(kind: str, name: str) -> Path:
    """The file of module `name` (a package's `__init__.py`), found without importing it: a
    shared module such as `cairn.stage.raytrain` imports Ray Train and torch, which the engine
    must not pay for just to compute a cache key."""
    found = importlib.util.find_spec(name)
    if found is None or found.origin is None:
        raise ModuleNotFoundError(
            f"stage kind '{kind}' names shared_code module '{name}', which is not importable; "
            "fix: name a module or package on the Python path"
        )
    return Path(found.origin)


def _hash_files(h: Any, root: Path, files: list[Path]) -> None:
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())


@cache
def package_version(name: str) -> str:
    """The installed version of a distribution, or "absent"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"
