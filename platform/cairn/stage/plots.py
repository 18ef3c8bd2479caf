"""Loss curves as PNG: where people would rather look than read.

Stages write their metric history as rows (`{"step": n, "train/loss": x, ...}`); this turns the
loss series (or another, such as rlvr's rewards) into one plot that lives inside the artifact,
so it travels with the model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def plot_losses(rows: Iterable[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Plot every `*loss*` series against `step`; returns the file, or None if there is none."""
    return plot_series(rows, out, title, lambda key: "loss" in key, "loss (nats/token)")


def plot_series(
    rows: Iterable[dict[str, Any]],
    out: Path,
    title: str,
    wanted: Callable[[str], bool],
    ylabel: str,
) -> Path | None:
    """Plot every series whose key is `wanted` against `step`; None if there is none."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if wanted(key) and isinstance(value, int | float) and "step" in row:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row["step"])
                ys.append(value)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for key, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=key, marker="o" if len(xs) < 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
