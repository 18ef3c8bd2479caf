"""Which filters a step runs, in what order, and what to tell a user they removed everything.

Filters run in a fixed order and a removed document is counted against the first filter that
removed it, so the counts add up to the documents dropped and a user can see which setting to
relax. Filter names are the config fields that control them, or the names of the quality rules
(`quality.FILTERS`) when `quality` is set. Each filter decides in its own module (`length`,
`language`, `quality`, `decontam`, and `dedup` after the scan); this one only knows their order.
"""

from __future__ import annotations

from cairn.stages.curate import length, quality
from cairn.stages.curate.config import CurateConfig

FILTERS = (*length.FILTERS, "dedup")  # the filters every step counts, whatever its config


def filter_names(config: CurateConfig, decontaminating: bool = True) -> tuple[str, ...]:
    """Every filter a step applies, in the order they run: length, language, quality rules,
    decontamination (when the step has eval_tasks and removes matches), exact and fuzzy dedup."""
    names: list[str] = list(length.FILTERS)
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
