"""Writing a curated dataset's data card: three PNG plots, removed.jsonl and DATA_CARD.md.

The last phase of curate. It reads only dataset.json (its "card" record is `card.CardStats`),
so a card can be written again from a dataset without re-running the step; the markdown is
`card_markdown`'s, which the release also renders from its copy of dataset.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from cairn.stages.curate.card import (
    CARD_DIR,
    CARD_MD,
    EDGES,
    LENGTHS_PNG,
    REMOVED_JSONL,
    REMOVED_PNG,
    TOKENS_PNG,
    CardStats,
    filters_in_order,
)
from cairn.stages.curate.card_markdown import render_markdown


def write_card(out_dir: Path, meta: dict[str, Any]) -> list[str]:
    """Write card/*.png, card/removed.jsonl and DATA_CARD.md into the dataset directory
    `out_dir` from its dataset.json dict `meta`; returns the paths written, relative to it."""
    card = CardStats.from_dict(meta["card"]) if meta.get("card") else CardStats()
    # A fresh folder, so that no plot of an earlier attempt (say a mix that is gone) survives.
    shutil.rmtree(out_dir / CARD_DIR, ignore_errors=True)
    (out_dir / CARD_DIR).mkdir(parents=True)
    written = [
        rel
        for rel, plot in (
            (LENGTHS_PNG, _plot_lengths),
            (TOKENS_PNG, _plot_tokens),
            (REMOVED_PNG, _plot_removed),
        )
        if plot(card, meta, out_dir / rel)
    ]
    with open(out_dir / REMOVED_JSONL, "w", encoding="utf-8") as f:
        for name, s in card.sources.items():
            for filt, examples in s.examples.items():
                for ex in examples:
                    row = {"source": name, "filter": filt, **ex}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    written.append(REMOVED_JSONL)
    text = render_markdown(meta, images=written, title="Data card")
    (out_dir / CARD_MD).write_text(text, encoding="utf-8")
    return [*written, CARD_MD]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, out: Path) -> bool:
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True


def _plot_edges() -> np.ndarray:
    # Log axes cannot show 0: the empty-document bin is drawn at [0.5, 1).
    e = EDGES.astype(float)
    e[0] = 0.5
    return np.append(e, e[-1] * 10**0.1)


def _plot_lengths(card: CardStats, meta: dict[str, Any], out: Path) -> bool:
    names = [n for n, s in card.sources.items() if s.chars_in.count or s.chars_out.count]
    if not names:
        return False
    plt = _pyplot()
    edges = _plot_edges()
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 2.8 * len(names)), dpi=100, squeeze=False)
    for row, name in zip(axes, names, strict=True):
        s = card.sources[name]
        for ax, series, unit in (
            (row[0], ((s.chars_in, "read"), (s.chars_out, "kept")), "characters"),
            (row[1], ((s.words_in, "words, read"), (s.tokens_out, "tokens, kept")), "length"),
        ):
            shown = [(x, label) for x, label in series if x.count]
            for lengths, label in shown:
                ax.stairs(lengths.hist, edges, label=f"{label} ({lengths.count:,} docs)")
            ax.set_xscale("log")
            if shown:  # zoom on the occupied bins, not the whole 1..1e6 range
                used = np.flatnonzero(sum(x.hist for x, _ in shown))
                ax.set_xlim(edges[used[0]] / 1.5, edges[used[-1] + 1] * 1.5)
                ax.legend(fontsize=8)
            ax.set_xlabel(f"{unit} per document")
            ax.set_ylabel("documents")
            ax.set_title(_short(name), fontsize=9)
            ax.grid(alpha=0.3)
    return _save(plt, fig, out)


def _plot_tokens(card: CardStats, meta: dict[str, Any], out: Path) -> bool:
    sources = meta.get("sources") or {}
    mix = (meta.get("mix") or {}).get("sources") or {}
    names = list(sources)
    if not names:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1 + 0.6 * len(names)), dpi=100)
    y = np.arange(len(names))
    if mix:  # the mix's own figures, as in the card's mix table
        have = [(mix.get(n) or {}).get("tokens_available") or 0 for n in names]
        used = [(mix.get(n) or {}).get("tokens_used") or 0 for n in names]
        ax.barh(y - 0.2, have, height=0.4, label="available")
        ax.barh(y + 0.2, used, height=0.4, label="used in the mix")
        ax.legend()
    else:
        ax.barh(y, [sources[n].get("tokens") or 0 for n in names], height=0.6)
    ax.set_yticks(y, [_short(n) for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("tokens")
    ax.set_title("tokens per source" + ("" if mix else " (kept documents)"))
    ax.grid(alpha=0.3, axis="x")
    return _save(plt, fig, out)


def _plot_removed(card: CardStats, meta: dict[str, Any], out: Path) -> bool:
    sources = meta.get("sources") or {}
    filters = [
        f
        for f in filters_in_order(meta)
        if any((s.get("removed") or {}).get(f) for s in sources.values())
    ]
    if not filters:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(filters) * max(1, len(sources)) ** 0.5))
    y = np.arange(len(filters))
    height = 0.8 / len(sources)
    for i, (name, s) in enumerate(sources.items()):
        counts = [(s.get("removed") or {}).get(f, 0) for f in filters]
        ax.barh(y - 0.4 + height * (i + 0.5), counts, height=height, label=_short(name))
    ax.set_yticks(y, filters, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("documents removed")
    ax.set_title("documents removed by each filter (first filter that rejected them)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]
