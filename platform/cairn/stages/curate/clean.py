"""Normalising documents and deciding which ones to keep.

Filters run in a fixed order and a removed document is counted against the first filter that
removed it, so the counts add up to the documents dropped and a user can see which setting to
relax. Filter names are the config fields that control them, or the names of the quality rules
(`quality.FILTERS`) when `quality` is set. Quality rules see the raw text, before whitespace is
collapsed, because several of them count lines and paragraphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cairn.stages.curate import quality
from cairn.stages.curate.config import CurateConfig

FILTERS = ("min_chars", "max_chars", "min_words", "dedup")


def filter_names(config: CurateConfig, decontaminating: bool = True) -> tuple[str, ...]:
    """Every filter a step applies, in the order they run: length, language, quality rules,
    decontamination (when the step has eval_tasks and removes matches), exact and fuzzy dedup."""
    names: list[str] = list(FILTERS[:3])
    if config.language is not None:
        names.append("language")
    if config.quality is not None:
        names += quality.FILTERS
    if decontaminating and config.decontaminate.action == "remove":
        names.append("decontamination")
    if config.dedup:
        names.append("dedup")
    if config.fuzzy_dedup is not None:
        names.append("fuzzy_dedup")
    return tuple(names)


def quality_filter(raw: str, config: CurateConfig) -> str | None:
    """The first quality rule that rejects the raw text (lines intact), or None."""
    if config.quality is None:
        return None
    failed = quality.check(raw, config.quality)
    return failed[0].split(":", 1)[0] if failed else None


def length_filter(text: str, config: CurateConfig) -> str | None:
    """The name of the first length filter that rejects a normalised text, or None to keep it."""
    if len(text) < config.min_chars:
        return "min_chars"
    if config.max_chars is not None and len(text) > config.max_chars:
        return "max_chars"
    # After normalise() words are separated by exactly one space.
    if config.min_words and (text.count(" ") + 1 if text else 0) < config.min_words:
        return "min_words"
    return None


@dataclass
class SourceStats:
    """What happened to one input's documents, as written to dataset.json."""

    documents_in: int = 0
    documents_out: int = 0
    tokens: int = 0
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    pii: dict[str, int] | None = None  # placeholders inserted, by type, when scrubbing is on
    skipped: dict[str, int] = field(default_factory=dict)  # malformed records, by reason

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "documents_in": self.documents_in,
            "documents_out": self.documents_out,
            "removed": dict(self.removed),
            "tokens": self.tokens,
            "skipped": dict(self.skipped),
        }
        if self.pii is not None:
            out["pii"] = dict(self.pii)
        return out


def explain_empty(removed: dict[str, int], config: CurateConfig) -> str:
    """Why no document survived the filters, and which config field to relax."""
    total = sum(removed.values())
    parts = [f"{name} removed {n}" for name, n in removed.items() if n]
    advice = []
    # dedup never appears here: it keeps the first copy of every text.
    for name, n in removed.items():
        if not n:
            continue
        if name == "min_chars" and config.min_chars == 1:
            advice.append(
                "those documents are empty after normalising whitespace: check that the sources "
                "hold text (and text_field names the field holding it)"
            )
        elif name in quality.FILTERS:
            advice.append(f"relax the quality rule {name} (or set quality: null)")
        elif name == "language":
            advice.append(
                f"check the language filter (keeps {config.language.keep if config.language else []}; "
                "set language: null to turn it off)"
            )
        elif name == "decontamination":
            advice.append(
                "the documents match the eval tasks: check eval_tasks (or use decontaminate.action: flag)"
            )
        else:
            advice.append(f"relax {name} (now {getattr(config, name)})")
    return (
        f"all {total} documents were filtered out ({', '.join(parts)}); "
        + "; ".join(advice)
        + " in the curate step's config"
    )
