"""Pydantic's validation errors as what a person editing a workflow file needs: a message and a fix.

Stage configs write their own checks as `ValueError("<problem>; fix: <what to do>")`; the fix
goes in its own column. Unknown fields get the closest known one ("did you mean ...?").
"""

from __future__ import annotations

import difflib
import reprlib
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from cairn.stage.numbers import members
from cairn.workflow.model import NAME_RE

# Type errors whose message does not say what the file holds ("unable to parse string").
SHOW_INPUT = {
    "int_type",
    "int_parsing",
    "int_from_float",
    "float_type",
    "float_parsing",
    "bool_type",
    "bool_parsing",
    "string_type",
}


def short(value: Any, limit: int = 60) -> str:
    """`value` as text of at most `limit` characters: a file may hold a megabyte-long key."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(e: Any) -> str:
    """A pydantic error as the problem a person reads."""
    t = e["type"]
    if t == "extra_forbidden":
        return "unknown field"
    if t == "missing":
        return "required field is missing"
    if t in ("model_type", "dict_type"):
        return f"must be a mapping of `key: value` lines, not {reprlib.repr(e['input'])}"
    if t == "value_error":
        # Our validators write "<problem>; fix: <what to do>": the fix goes in its own column.
        return str(e["msg"]).removeprefix("Value error, ").partition("; fix: ")[0]
    if t == "finite_number":  # pydantic's own (allow_inf_nan=False), for a value from Python
        return f"must be a finite number, not {e['input']}"
    if t in SHOW_INPUT:
        return f"{e['msg']} (given: {reprlib.repr(e['input'])})"
    return str(e["msg"])


def fix(e: Any, model: type, loc: tuple[Any, ...]) -> str:
    """What to do about a pydantic error at `loc` of `model`."""
    t = e["type"]
    name = short(loc[-1]) if loc else ""
    ctx = e.get("ctx") or {}
    if t == "extra_forbidden":
        fields = _fields_at(model, e["loc"][:-1])
        if not fields:
            return "remove it"
        return suggest(name, fields, "remove it; known fields: " + ", ".join(fields))
    if t == "missing":
        return f"add `{name}:`"
    if t in ("model_type", "dict_type"):
        inner = _fields_at(model, e["loc"])
        return "indent its fields under it" + (f": {', '.join(inner)}" if inner else "")
    if t == "too_short":
        return f"add at least one entry under `{name}:`"
    if t == "value_error":
        _, sep, fix = str(e["msg"]).partition("; fix: ")
        return fix if sep else "change the fields named in the message so they agree"
    if t in ("bool_type", "bool_parsing"):
        return "write true or false"
    if t == "string_pattern_mismatch" and ctx.get("pattern") == NAME_RE:
        return "use lowercase letters, digits, '-' or '_', starting with a letter"
    desc = _field_description(model, e["loc"])
    desc = f" ({desc})" if desc else ""
    if t == "string_pattern_mismatch":
        return f"give a value matching {ctx.get('pattern', 'the pattern')}{desc}"
    if t == "number_not_bool":
        return f"give the number itself{desc}; true and false are for yes-or-no fields"
    if t in ("finite_number", "number_not_finite"):
        return f"give a finite number{desc}; .inf and .nan are not allowed"
    bound = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if t in bound and ctx:
        return f"give a value {bound[t]} {next(iter(ctx.values()))}{desc}"
    return f"give a valid value{desc}"


def _at(model: type, loc: tuple[Any, ...]) -> Any:
    """The annotation that `loc` (a pydantic error's) points at inside `model`, through
    nested models, `Optional`, unions, `list[...]` and `dict[str, ...]`; None if it cannot
    tell."""
    current: Any = model
    for part in loc:
        step = None
        for kind in members(current):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                if isinstance(part, str) and part in kind.model_fields:
                    step = kind.model_fields[part].annotation
                elif part == kind.__name__:  # pydantic names a union's branch in the loc
                    step = kind
            elif get_origin(kind) is dict and part != "[key]":
                step = get_args(kind)[1] if get_args(kind) else Any
            elif get_origin(kind) is list and isinstance(part, int):
                step = get_args(kind)[0] if get_args(kind) else Any
            if step is not None:
                break
        if step is None:
            return None
        current = step
    return current


def _fields_at(model: type, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for suggestions."""
    for kind in members(_at(model, loc)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return list(kind.model_fields)
    return []


def _field_description(model: type, loc: tuple[Any, ...]) -> str:
    """The description of the field nearest `loc` (its own, else its parent's...)."""
    for n in range(len(loc), 0, -1):
        parent, name = loc[: n - 1], loc[n - 1]
        for kind in members(_at(model, parent)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                info = kind.model_fields.get(str(name))
                if info is not None:
                    return info.description or ""
    return ""


def suggest(word: str, choices: list[str], fallback: str) -> str:
    """'did you mean X?' for a near miss among `choices`, else `fallback`."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else fallback
