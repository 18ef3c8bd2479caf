"""The registry of stage kinds: one explicit dict; `register` is the only way in.

The built-in kinds register themselves in `cairn.stages`; a test, a benchmark or a plugin adds
its own with `register(StageSpec(...))` at import time of its module. A kind's name is taken
once: registering it again is an error, never a silent replacement (torchtitan's
`register_train_spec` rule), so two plugins cannot shadow each other or a built-in.
"""

from __future__ import annotations

import importlib

from cairn.stage.spec import StageSpec

_KINDS: dict[str, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Make `spec.kind` a stage kind workflows can name; returns `spec`."""
    if not isinstance(spec, StageSpec):
        raise TypeError(f"register() takes a StageSpec, not {type(spec).__name__}")
    have = _KINDS.get(spec.kind)
    if have is not None:
        raise ValueError(
            f"stage kind '{spec.kind}' is already registered (by {have.run.__module__}); "
            f"fix: give the kind from {spec.run.__module__} another name"
        )
    _KINDS[spec.kind] = spec
    return spec


def unregister(kind: str) -> None:
    """Remove a kind (tests that register a kind for one test only)."""
    _KINDS.pop(kind, None)


def lookup(kind: str, module: str | None = None) -> StageSpec:
    """The spec of `kind`. `module` is where the driver found it (sent along to workers): a kind
    a plugin registers is imported from there in a process that has not imported it yet."""
    if kind not in _KINDS and module:
        mod = importlib.import_module(module)  # a plugin registers its kinds on import
        if kind not in _KINDS:
            found = [v for v in vars(mod).values() if isinstance(v, StageSpec) and v.kind == kind]
            if found:
                register(found[0])
    try:
        return _KINDS[kind]
    except KeyError:
        raise KeyError(f"no stage kind '{kind}' is registered") from None


def registered() -> list[str]:
    """Every registered kind, in the order they were registered."""
    return list(_KINDS)
