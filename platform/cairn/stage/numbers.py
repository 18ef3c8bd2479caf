"""Numbers in configs and resources must be numbers: a boolean or a non-finite float given for a
number field is refused, naming the field.

Pydantic's lax mode reads `true` as 1 for an int field, so `max_steps: true` would be a one-step
run. A NaN fails every comparison, so `lr: .nan` was refused with the message for a value above
the bound, and `.inf` passes any field without an upper bound. In a hand-written YAML file such
values are typos. `StageConfig` and `Resources` check their fields with `refuse_loose_numbers`
before pydantic converts anything, and it reaches into nested models too (curate's `quality:`,
`sources:` are plain pydantic models), so each problem names its own field.
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterator
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError


def refuse_loose_numbers(model: type[BaseModel], name: str, value: Any) -> Any:
    """`value` for field `name` of `model`, unchanged; or a `ValidationError` at that field
    (and below it, for nested models) listing each boolean or non-finite number given where a
    number is expected. For a `field_validator("*", mode="before")`."""
    info = model.model_fields.get(name)
    if info is None:
        return value
    errors = list(_check(info.annotation, value, (name,)))
    if errors:
        raise ValidationError.from_exception_data(model.__name__, errors)
    return value


def members(annotation: Any) -> list[Any]:
    """The types a field's annotation admits, through `Optional`, unions and `Annotated`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in members(arg)]
    return [annotation]


def _check(annotation: Any, value: Any, path: tuple[Any, ...]) -> Iterator[InitErrorDetails]:
    kinds = members(annotation)
    if isinstance(value, bool):
        if bool not in kinds and (int in kinds or float in kinds):
            what = "a number" if float in kinds else "a whole number"
            yield _error(
                "number_not_bool", f"must be {what}, not {str(value).lower()}", path, value
            )
    elif isinstance(value, float) and not math.isfinite(value):
        if float in kinds:
            shown = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
            yield _error("number_not_finite", f"must be a finite number, not {shown}", path, value)
    elif isinstance(value, dict):
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                for key, item in value.items():
                    info = kind.model_fields.get(key) if isinstance(key, str) else None
                    if info is not None:
                        yield from _check(info.annotation, item, (*path, key))
                return
            if get_origin(kind) is dict and len(get_args(kind)) == 2:
                for key, item in value.items():
                    yield from _check(get_args(kind)[1], item, (*path, key))
                return
    elif isinstance(value, list):
        for kind in kinds:
            args = get_args(kind)
            if get_origin(kind) is list and args:
                for i, item in enumerate(value):
                    yield from _check(args[0], item, (*path, i))
                return
            if get_origin(kind) is tuple and args:  # tuple[float, float] or tuple[str, ...]
                items = args[:1] * len(value) if args[-1] is Ellipsis else args
                for i, (item_kind, item) in enumerate(zip(items, value, strict=False)):
                    yield from _check(item_kind, item, (*path, i))
                return


def _error(kind: str, message: str, path: tuple[Any, ...], value: Any) -> InitErrorDetails:
    # The message names the field from the model's top (`quality.max_ratio`); the error's loc
    # is below the field being validated, which pydantic puts in front of it.
    field = ".".join(str(p) for p in path)
    return InitErrorDetails(
        type=PydanticCustomError(kind, f"`{field}` {message}"), loc=path[1:], input=value
    )
