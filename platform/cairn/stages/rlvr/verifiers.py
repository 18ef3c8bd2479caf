"""Verifiers: the functions that score a completion against a row's ground truth, for RLVR.

Reinforcement learning with verifiable rewards (Tülu 3) needs no reward model: a reward is a
program that checks the answer. Each verifier here is a pure function
`(completion, ground_truth, row) -> score in [0, 1]` with no state, no I/O and no heavy imports,
so that the same function runs in the driver (to check rows), in a Ray Train worker (to score
rollouts) and in a unit test (on hand-written cases), and always gives the same score for the
same text. One explicit dict, `REGISTRY`, names them; nothing is discovered by scanning.

A Tülu 3 RLVR row says which verifier scores it through its `dataset` field (`"gsm8k"`,
`"math"`, `"ifeval"`). `DEFAULT_DATASETS` maps those values to verifier names; a workflow's
rlvr step may map more values, or remap these, with `verifiers: {dataset_value: verifier_name}`
over the defaults, and a name that is not in `REGISTRY` is a validation error. `problem()` says,
before anything runs, why a verifier could never score a row's ground truth (a GSM8K answer that
is not a number, an IFEval constraint with an unknown `func_name`), so that a bad row is named
with its file and line instead of silently earning reward 0 for the whole run.

- `final_number` (GSM8K): the last number in the completion equals the ground truth
  numerically (`#### 7`, `\\boxed{7}`, `The answer is 7.`, `1,000`, `-3`, `7.0` all read).
- `exact_match` (MATH-style short answers): equal after normalising case, surrounding
  whitespace and punctuation, articles, `\\boxed{...}` and runs of spaces.
- `ifeval`: the ground truth is a JSON object `{"func_name": ..., <arguments>}` as in Tülu 3's
  RLVR-IFeval rows (unused arguments are null); the function names, argument names and checks
  are open-instruct's (`open_instruct/if_functions.py`), for the constraints listed in
  `IFEVAL_FUNCTIONS`.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Verifier = Callable[[str, str, Mapping[str, Any]], float]

# --- final_number -------------------------------------------------------------------------------

# A thousands separator sits between a digit and exactly three digits ("1,000", "12,345,678");
# "3,4" and "3, 4" are two numbers, as a reader would take them.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")


def _as_number(text: str) -> Decimal | None:
    """`text` as an exact decimal (commas between thousands allowed), or None."""
    cleaned = _THOUSANDS.sub("", text.strip())
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", cleaned):
        return None
    try:
        return Decimal(cleaned)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None


def last_number(completion: str) -> Decimal | None:
    """The last number written in `completion`, or None if it has none."""
    found = _NUMBER.findall(_THOUSANDS.sub("", completion))
    return Decimal(found[-1]) if found else None


def final_number(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    """1.0 if the completion's last number equals the ground truth number (7.0 == 7), else 0.0."""
    expected = _as_number(str(ground_truth))
    got = last_number(completion)
    return float(expected is not None and got is not None and got == expected)


# --- exact_match --------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
# Stripped from both ends; backslashes and braces stay, since they belong to LaTeX answers
# (`\frac{1}{2}` must not become `frac{1}{2`).
_EDGE_PUNCTUATION = "".join(c for c in string.punctuation if c not in "\\{}") + string.whitespace


def _unbox(text: str) -> str:
    """The contents of the last `\\boxed{...}` in `text` (braces balanced), else `text`."""
    starts = list(_BOXED.finditer(text))
    if not starts:
        return text
    begin = starts[-1].end()
    depth = 1
    for i in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i]
    return text  # unbalanced: leave it alone rather than guess where it ends


def normalise_answer(text: str) -> str:
    """Lower case, `\\boxed{}` unwrapped, no surrounding punctuation, no articles, single spaces."""
    text = _unbox(text).lower().strip(_EDGE_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split()).strip(_EDGE_PUNCTUATION)


def exact_match(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    """1.0 if the completion equals the ground truth after `normalise_answer`, else 0.0."""
    return float(normalise_answer(completion) == normalise_answer(str(ground_truth)))


# --- ifeval: open-instruct's constraint checks --------------------------------------------------
# Each takes the completion and the constraint's arguments by the names the RLVR-IFeval rows use.

_QUANTIFIERS = ("at least", "at most", "around")


def validate_word_constraint(text: str, N: int, quantifier: str) -> bool:
    """Words (split on whitespace) at least / at most / around (within 10%, at least 1) N."""
    count = len(text.split())
    if quantifier == "at least":
        return count >= N
    if quantifier == "at most":
        return count <= N
    return abs(count - N) <= max(round(N * 0.1), 1)  # "around"


def verify_keywords(text: str, keyword_list: list[str]) -> bool:
    """Every keyword occurs in the text, ignoring case (as a substring, like open-instruct)."""
    lowered = text.lower()
    return all(keyword.lower() in lowered for keyword in keyword_list)


def validate_forbidden_words(text: str, forbidden_words: list[str]) -> bool:
    """None of the words occurs in the text, ignoring case (as a substring)."""
    lowered = text.lower()
    return not any(word.lower() in lowered for word in forbidden_words)


def verify_keyword_frequency(text: str, word: str, N: int) -> bool:
    """The word occurs exactly N times as a whole word, ignoring case."""
    return re.findall(r"\b\w+\b", text.lower()).count(word.lower()) == N


def verify_paragraph_count(text: str, N: int) -> bool:
    """Exactly N non-empty paragraphs separated by the markdown divider `* * *`."""
    cleaned = "\n".join(line.strip() for line in text.splitlines()).strip()
    paragraphs = cleaned.split("* * *")
    return all(p.strip() for p in paragraphs) and len(paragraphs) == N


def validate_json_format(text: str) -> bool:
    """The whole completion parses as JSON."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def validate_lowercase(text: str) -> bool:
    """No capital letters."""
    return text == text.lower()


def validate_uppercase(text: str) -> bool:
    """No lower-case letters."""
    return text == text.upper()


def validate_no_commas(text: str) -> bool:
    """No comma anywhere."""
    return "," not in text


def validate_end(text: str, end_phrase: str) -> bool:
    """The completion ends with the exact phrase."""
    return text.endswith(end_phrase)


def validate_quotation(text: str) -> bool:
    """The whole completion is wrapped in double quotation marks."""
    return text.startswith('"') and text.endswith('"')


def validate_title(text: str) -> bool:
    """A title in double angular brackets, such as <<poem of joy>>."""
    return re.search(r"<<(.*?)>>", text) is not None


IFEVAL_FUNCTIONS: dict[str, Callable[..., bool]] = {
    f.__name__: f
    for f in (
        validate_word_constraint,
        verify_keywords,
        validate_forbidden_words,
        verify_keyword_frequency,
        verify_paragraph_count,
        validate_json_format,
        validate_lowercase,
        validate_uppercase,
        validate_no_commas,
        validate_end,
        validate_quotation,
        validate_title,
    )
}

# What each argument must be; anything else in a row is a data error, not a zero reward.
_ARGUMENT_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "N": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer ≥ 0"),
    "quantifier": (lambda v: v in _QUANTIFIERS, f"one of {', '.join(map(repr, _QUANTIFIERS))}"),
    "keyword_list": (
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(k, str) and k for k in v),
        "a non-empty list of non-empty strings",
    ),
    "forbidden_words": (
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(k, str) and k for k in v),
        "a non-empty list of non-empty strings",
    ),
    "word": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "end_phrase": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
}


def _parameters(func: Callable[..., bool]) -> tuple[str, ...]:
    code = func.__code__
    return code.co_varnames[1 : code.co_argcount]  # after `text`


def _constraint(ground_truth: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The ground truth as a constraint dict, or None and why it is not one."""
    if isinstance(ground_truth, Mapping):
        parsed: Any = dict(ground_truth)
    elif isinstance(ground_truth, str):
        try:
            parsed = json.loads(ground_truth)
        except ValueError as e:
            return None, f"ground_truth is not JSON ({e})"
    else:
        return None, f"ground_truth is a {type(ground_truth).__name__}, not a JSON object string"
    if not isinstance(parsed, dict):
        return None, f"ground_truth is JSON {type(parsed).__name__}, not an object"
    return parsed, None


def ifeval_problem(ground_truth: Any) -> str | None:
    """None if `ground_truth` is a constraint `ifeval` can check, else why not."""
    constraint, why = _constraint(ground_truth)
    if constraint is None:
        return why
    name = constraint.get("func_name")
    if name is None:
        return "ground_truth has no func_name (the IFEval check to run)"
    if not isinstance(name, str) or name not in IFEVAL_FUNCTIONS:
        return (
            f"func_name {name!r} is not a known IFEval constraint (known: "
            f"{', '.join(sorted(IFEVAL_FUNCTIONS))})"
        )
    wanted = _parameters(IFEVAL_FUNCTIONS[name])
    given = {k: v for k, v in constraint.items() if k != "func_name" and v is not None}
    for arg in wanted:
        if arg not in given:
            return f"{name} needs the argument {arg!r}, which the ground truth lacks (or is null)"
        check, expected = _ARGUMENT_CHECKS[arg]
        if not check(given[arg]):
            return f"{name}: argument {arg!r} is {given[arg]!r}, expected {expected}"
    extra = sorted(set(given) - set(wanted))
    if extra:
        return (
            f"{name} takes no argument {', '.join(map(repr, extra))} (it takes: "
            f"{', '.join(wanted) or 'none'})"
        )
    return None


def ifeval(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    """1.0 if the completion meets the JSON constraint in `ground_truth`, else 0.0.

    Arguments that are null are dropped first, as open-instruct does (every RLVR-IFeval row lists
    every argument name, null where unused). A ground truth `problem()` rejects scores 0.0.
    """
    if ifeval_problem(ground_truth) is not None:
        return 0.0
    constraint, _ = _constraint(ground_truth)
    assert constraint is not None
    func = IFEVAL_FUNCTIONS[constraint["func_name"]]
    args = {k: constraint[k] for k in _parameters(func)}
    return float(func(completion.strip(), **args))


# --- the registry -------------------------------------------------------------------------------

REGISTRY: dict[str, Verifier] = {
    "final_number": final_number,
    "exact_match": exact_match,
    "ifeval": ifeval,
}

DEFAULT_DATASETS: dict[str, str] = {
    "gsm8k": "final_number",
    "math": "exact_match",
    "ifeval": "ifeval",
}


def get(name: str) -> Verifier:
    """The verifier called `name`; KeyError (listing the known names) for any other."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown verifier {name!r}; known verifiers: {', '.join(sorted(REGISTRY))}"
        ) from None


def _number_problem(ground_truth: Any) -> str | None:
    if isinstance(ground_truth, bool) or not isinstance(ground_truth, str | int | float):
        return f"ground_truth is a {type(ground_truth).__name__}, not a number"
    if _as_number(str(ground_truth)) is None:
        return f"ground_truth {ground_truth!r} is not a number (such as 7, -3, 2.5 or 1,000)"
    return None


def _text_problem(ground_truth: Any) -> str | None:
    if not isinstance(ground_truth, str | int | float) or isinstance(ground_truth, bool):
        return f"ground_truth is a {type(ground_truth).__name__}, not a string"
    if not normalise_answer(str(ground_truth)):
        return f"ground_truth {ground_truth!r} is empty once normalised, so nothing could match it"
    return None


_PROBLEMS: dict[str, Callable[[Any], str | None]] = {
    "final_number": _number_problem,
    "exact_match": _text_problem,
    "ifeval": ifeval_problem,
}


def problem(name: str, ground_truth: Any, row: Mapping[str, Any]) -> str | None:
    """None if verifier `name` can score rows with this ground truth; otherwise why not, in words.

    Used to reject bad rows before any worker starts. KeyError for an unknown verifier name.
    """
    get(name)
    if ground_truth is None:
        return "ground_truth is missing (null)"
    check = _PROBLEMS.get(name)
    return check(ground_truth) if check is not None else None
