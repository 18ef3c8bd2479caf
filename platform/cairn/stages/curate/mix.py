"""Mixing sources by weight: how many tokens of each source the training split gets.

The rule (dolma's and OLMo's "mix by upsampling or downsampling a source to its share"):

- a source's weight is its share of the mixed training tokens; weights are normalised over the
  sources, so `{plays: 3, docs: 1}` means 75% / 25%;
- the mixed split has `target_tokens` tokens, or, without a target, as many as the sources have
  together (the mix changes proportions, not size);
- a source with fewer tokens than its share is repeated: every document `floor(share / have)`
  times, then a seeded random subset of its documents once more until the share is met (so a
  document is repeated at most one time more than any other of its source); a source with more is
  sub-sampled by the same seeded subset. Whole documents only: a share is met to within one
  document's tokens.

With no weights and no target every training document is used once, as it was before mixing
existed. Validation is never mixed: it measures the model on each source as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cairn.errors import StageError


@dataclass
class Plan:
    """Which training documents go into the packed stream (repeats included), and the record."""

    entries: np.ndarray  # document numbers (into the training documents), with repeats
    sources: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    target_tokens: int | None = None

    def record(self) -> dict[str, object]:
        """The mix as dataset.json records it."""
        return {"target_tokens": self.target_tokens, "sources": self.sources}


def plan(
    doc_source: np.ndarray,
    doc_tokens: np.ndarray,
    names: list[str],
    weights: list[float | None],
    target_tokens: int | None,
    seed: int,
) -> Plan:
    """The mix of the training documents (`doc_source[i]` is the source index of document i)."""
    have = np.bincount(doc_source, weights=doc_tokens, minlength=len(names)).astype(np.int64)
    weighted = [w is not None for w in weights]
    if any(weighted) and not all(weighted):
        missing = [n for n, w in zip(names, weights, strict=True) if w is None]
        raise StageError(
            f"curate: sources.<name>.weight is set for some sources but not for {missing}; give "
            "every source a weight (weights are shares of the mixed training tokens), or none"
        )
    if not any(weighted) and target_tokens is None:
        entries = np.arange(len(doc_source), dtype=np.int64)
        total = int(have.sum())
        return Plan(
            entries,
            {
                name: {
                    "weight": None,
                    "share": round(int(have[s]) / total, 6) if total else 0.0,
                    "tokens_available": int(have[s]),
                    "tokens_used": int(have[s]),
                    "documents_used": int((doc_source == s).sum()),
                    "epochs": 1.0,
                }
                for s, name in enumerate(names)
            },
        )
    raw = np.array([w if w is not None else have[s] for s, w in enumerate(weights)], float)
    shares = raw / raw.sum()
    target = int(target_tokens if target_tokens is not None else have.sum())
    parts, record = [], {}
    for s, name in enumerate(names):
        want = int(round(shares[s] * target))
        docs = np.flatnonzero(doc_source == s)
        if want > 0 and have[s] == 0:
            raise StageError(
                f"curate: source {name} has no training text left after filtering, but its "
                f"weight asks for {want} tokens; relax the filters or drop its weight"
            )
        repeats, rest = divmod(want, int(have[s])) if have[s] else (0, 0)
        order = np.random.default_rng([seed, 1_000 + s]).permutation(docs)
        cum = np.cumsum(doc_tokens[order])
        take = min(int(np.searchsorted(cum, rest)) + 1, len(order)) if rest > 0 else 0
        parts += [np.tile(docs, repeats), order[:take]]
        used = repeats * int(have[s]) + (int(cum[take - 1]) if take else 0)
        record[name] = {
            "weight": weights[s],
            "share": round(float(shares[s]), 6),
            "tokens_available": int(have[s]),
            "tokens_used": used,
            "documents_used": repeats * len(docs) + take,
            "epochs": round(used / int(have[s]), 4) if have[s] else 0.0,
        }
    entries = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return Plan(entries, record, target)
