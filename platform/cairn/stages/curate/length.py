"""The length filter: documents too short or too long to be worth training on.

Its settings are three top-level fields of the step's config (`min_chars`, `max_chars`,
`min_words`), not a nested model like the other filters' (`quality: {...}`): workflows write them
flat, and nesting them would break those workflows and change every dataset's recorded identity.
`Limits` names what this filter reads of them, so it needs nothing else of curate. Lengths are
measured on the normalised text (`text.normalise`), the text that is kept.
"""

from __future__ import annotations

from typing import Protocol

FILTERS = ("min_chars", "max_chars", "min_words")  # in the order they are checked


class Limits(Protocol):
    """The length settings of a step (`CurateConfig` has them)."""

    @property
    def min_chars(self) -> int: ...

    @property
    def max_chars(self) -> int | None: ...

    @property
    def min_words(self) -> int: ...


def check(text: str, limits: Limits) -> str | None:
    """The name of the first length filter that rejects a normalised text, or None to keep it."""
    if len(text) < limits.min_chars:
        return "min_chars"
    if limits.max_chars is not None and len(text) > limits.max_chars:
        return "max_chars"
    # After normalise() words are separated by exactly one space.
    if limits.min_words and (text.count(" ") + 1 if text else 0) < limits.min_words:
        return "min_words"
    return None
