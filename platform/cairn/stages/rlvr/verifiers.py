"""TEMPORARY stand-in until the verifiers branch lands (same API)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Verifier = Callable[[str, str, Mapping[str, Any]], float]


def final_number(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    nums = re.findall(r"-?\d+(?:\.\d+)?", completion.replace(",", ""))
    try:
        return float(bool(nums) and float(nums[-1]) == float(ground_truth))
    except ValueError:
        return 0.0


def exact_match(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    return float(completion.strip().lower() == str(ground_truth).strip().lower())


def ifeval(completion: str, ground_truth: str, row: Mapping[str, Any]) -> float:
    return 0.0


REGISTRY: dict[str, Verifier] = {
    "final_number": final_number,
    "exact_match": exact_match,
    "ifeval": ifeval,
}
DEFAULT_DATASETS = {"gsm8k": "final_number", "math": "exact_match", "ifeval": "ifeval"}


def get(name: str) -> Verifier:
    return REGISTRY[name]


def problem(name: str, ground_truth: Any, row: Mapping[str, Any]) -> str | None:
    if name == "final_number":
        try:
            float(str(ground_truth).replace(",", ""))
        except ValueError:
            return f"ground truth {ground_truth!r} is not a number"
    return None
