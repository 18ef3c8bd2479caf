"""Pydantic's validation errors as what a person editing a workflow file needs: a message and a fix.

Stage configs write their own checks as `ValueError("<problem>; fix: <what to do>")`; the fix
goes in its own column. Unknown fields get the closest known one ("did you mean ...?").
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from cairn.workflow.model import StepModel


def message(e: Any) -> str:
    """A pydantic error as the problem a person reads."""
    t = e["type"]
    if t == "extra_forbidden":
        return "unknown field"
    if t == "missing":
        return "required field is missing"
    if t in ("model_type", "dict_type"):
        return f"must be a mapping of `key: value` lines, not {e['input']!r}"
    if t == "value_error":
        # Our validators write "<problem>; fix: <what to do>": the fix goes in its own column.
        return str(e["msg"]).removeprefix("Value error, ").partition("; fix: ")[0]
    return str(e["msg"])


def fix(e: Any, model: type, loc: tuple[Any, ...]) -> str:
    """What to do about a pydantic error at `loc` of `model`."""
    t = e["type"]
    name = str(loc[-1]) if loc else ""
    fields = _fields_at(model, e["loc"][:-1])
    if t == "extra_forbidden":
        return suggest(name, fields, "remove it; known fields: " + ", ".join(fields))
    if t == "missing":
        return f"add `{name}:`"
    if t == "string_pattern_mismatch":
        return "use lowercase letters, digits, '-' or '_', starting with a letter"
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
    desc = _field_description(model, e["loc"])
    desc = f" ({desc})" if desc else ""
    bound = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if t in bound and e.get("ctx"):
        return f"give a value {bound[t]} {next(iter(e['ctx'].values()))}{desc}"
    return f"give a valid value{desc}"


def _fields_at(model: type, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model that `loc` points into, for suggestions."""
    current: Any = model
    skip_key = False
    for part in loc:
        if skip_key:  # a key of the `steps` mapping (a step's name), not a field
            skip_key = False
            continue
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
        elif str(part) == "steps":
            current = StepModel
            skip_key = True
        else:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _field_description(model: type, loc: tuple[Any, ...]) -> str:
    if not loc or not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    info = model.model_fields.get(str(loc[-1])) if len(loc) == 1 else None
    if info is None and len(loc) > 1:
        return _field_description(model, loc[-1:])
    return (info.description or "") if info else ""


def suggest(word: str, choices: list[str], fallback: str) -> str:
    """'did you mean X?' for a near miss among `choices`, else `fallback`."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else fallback
