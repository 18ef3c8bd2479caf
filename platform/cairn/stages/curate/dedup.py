"""The dedup phase: exact and near duplicates found across the corpus with one shuffle on Ray Data.

The scan left every kept document's keys in the scratch Parquet file: its exact key (from the
sha256 of its normalised text) and, with fuzzy dedup on, one MinHash LSH key per band
(`minhash`). Two documents are duplicates when they share a key, and clusters are joined
transitively, so the phase is one grouping by key and a connected-components pass:

- `find_duplicates`: every (key, order) pair goes through one Ray Data sort by key (a shuffle:
  all rows with one key end up next to each other, whatever block they started in). A run of
  equal keys becomes edges from its lowest order to each other member; only edges (about one per
  duplicate and band) come back to the driver, which joins them into connected components. In
  each component the lowest order survives, so the result depends only on the documents and
  their order, never on block counts or scheduling.
- `run`: which filter each removed document counts against (`dedup` for exact copies,
  `fuzzy_dedup` for near ones), by the step's config.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cairn.stage import Context
from cairn.stages.curate import raydata
from cairn.stages.curate.config import CurateConfig
from cairn.stages.curate.minhash import MIX, FuzzyConfig, mix64

_U64 = np.uint64
_EXACT_SALT = _U64(0xD6E8FEB86659FD93)  # keeps the exact "band" apart from the MinHash bands


@dataclass
class Duplicates:
    """Documents to remove, each mapped to the order of the document kept for its cluster.

    `exact`: some earlier document has the same normalised text. `fuzzy`: no earlier exact
    copy, but the document is a near-duplicate (transitively) of the kept one.
    """

    exact: dict[int, int] = field(default_factory=dict)
    fuzzy: dict[int, int] = field(default_factory=dict)


def run(config: CurateConfig, kept_path: Path, ctx: Context) -> dict[int, str]:
    """order → the dedup filter that removes it ("dedup" exact, "fuzzy_dedup" near)."""
    if not config.dedup and config.fuzzy_dedup is None:
        return {}
    if pq.ParquetFile(kept_path).metadata.num_rows == 0:
        return {}
    columns = ["order", "exact"] + (["bands"] if config.fuzzy_dedup is not None else [])
    started = time.monotonic()
    with raydata.unwrapped():
        dups = find_duplicates(raydata.read_local_parquet(kept_path, columns), config.fuzzy_dedup)
    removed: dict[int, str] = {}
    if config.dedup:
        removed.update(dict.fromkeys(dups.exact, "dedup"))
    else:  # exact copies are near-duplicates too: with fuzzy on, they go as such
        removed.update(dict.fromkeys(dups.exact, "fuzzy_dedup"))
    if config.fuzzy_dedup is not None:
        removed.update(dict.fromkeys(dups.fuzzy, "fuzzy_dedup"))
    else:
        removed = {o: r for o, r in removed.items() if o in dups.exact}
    ctx.log(
        f"dedup: {len(dups.exact)} exact and {len(dups.fuzzy)} near duplicates "
        f"in {time.monotonic() - started:.1f}s"
        + (
            f" (MinHash {config.fuzzy_dedup.bands}x{config.fuzzy_dedup.rows}, "
            f"{config.fuzzy_dedup.ngram}-grams, threshold ~{config.fuzzy_dedup.threshold:.2f})"
            if config.fuzzy_dedup is not None
            else ""
        )
    )
    return removed


def _matrix(column: pa.ChunkedArray | pa.Array, name: str, width: int) -> np.ndarray:
    """A (rows, width) uint64 matrix from a fixed-size-list, list or Ray tensor column."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
    else:  # Ray's tensor extension type (numpy arrays written by map_batches)
        values = np.asarray(col.to_numpy(zero_copy_only=False))
    if values.size != len(col) * width:
        raise ValueError(
            f"column {name!r} holds {values.size} values for {len(col)} documents, expected "
            f"{width} per document (FuzzyConfig.bands): compute it with minhash.signatures and "
            "the same FuzzyConfig passed to find_duplicates"
        )
    return values.astype(_U64, copy=False).reshape(len(col), width)


def _explode(table: pa.Table, bands: int) -> dict[str, np.ndarray]:
    """(key, order, is_exact) rows: one per band and document, plus one for its exact key."""
    for name in ("order", "exact", *(["bands"] if bands else [])):
        if name not in table.column_names:
            raise ValueError(
                f"find_duplicates needs a column {name!r}; the dataset has {table.column_names}"
            )
    order = table.column("order").to_numpy().astype(np.int64)
    exact = table.column("exact").to_numpy().astype(_U64)
    keys = [mix64(exact ^ _EXACT_SALT)]
    if bands:
        sig = _matrix(table.column("bands"), "bands", bands)
        salt = np.arange(1, bands + 1, dtype=_U64) * MIX  # the same hash in two bands differs
        keys.append(mix64((sig + salt).T.ravel()))
    n = len(order)
    return {
        "key": np.concatenate(keys),
        "order": np.tile(order, 1 + bands),
        "is_exact": np.arange(n * (1 + bands)) < n,
    }


def _edges(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Edges from the lowest order of each run of equal keys to the other members.

    The first and last run of the block also come out as `b == -1` rows (key, lowest order):
    should one key's run be cut across two blocks, the driver joins the halves with them.
    """
    key, order, exact = batch["key"], batch["order"], batch["is_exact"]
    if len(key) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"key": empty.astype(_U64), "a": empty, "b": empty, "is_exact": empty.astype(bool)}
    idx = np.lexsort((order, key))
    key, order, exact = key[idx], order[idx], exact[idx]
    new_run = np.ones(len(key), dtype=bool)
    new_run[1:] = key[1:] != key[:-1]
    run_id = np.cumsum(new_run) - 1
    run_first = np.flatnonzero(new_run)
    member = ~new_run
    ends = np.concatenate([run_first[:1], run_first[-1:]])  # lowest order of first/last run
    return {
        "key": np.concatenate([key[member], key[ends]]),
        "a": np.concatenate([order[run_first[run_id[member]]], order[ends]]),
        "b": np.concatenate([order[member], np.full(len(ends), -1, dtype=np.int64)]),
        "is_exact": np.concatenate([exact[member], exact[ends]]),
    }


def _components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(node orders, the lowest order of each node's connected component), vectorised.

    Hook every edge's endpoints to the smaller of their labels, then jump pointers until each
    label is a root; repeat until no edge joins two labels. Nodes are numbered in order, so the
    smallest label of a component is its lowest order.
    """
    nodes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    u, v = inv[: len(a)], inv[len(a) :]
    label = np.arange(len(nodes))
    while True:
        lu, lv = label[u], label[v]
        differ = lu != lv
        if not differ.any():
            break
        lo = np.minimum(lu[differ], lv[differ])
        np.minimum.at(label, lu[differ], lo)
        np.minimum.at(label, lv[differ], lo)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped
    return nodes, nodes[label]


def find_duplicates(ds: Any, cfg: FuzzyConfig | None) -> Duplicates:
    """Exact (and, with `cfg`, near) duplicates among the rows of a Ray dataset.

    `ds` has columns `order` (int64, unique; lower wins), `exact` (uint64, see `exact_keys`) and,
    when `cfg` is given, `bands` (cfg.bands uint64 per row, see `signatures`).
    """
    from ray.data.context import ShuffleStrategy

    bands = cfg.bands if cfg is not None else 0
    rows = ds.map_batches(_explode, fn_kwargs={"bands": bands}, batch_format="pyarrow")
    # Sorting range-partitions by key: every row of one key lands in one block, next to the
    # others, which is the shuffle LSH needs; _edges then works block by block.
    grouped = rows.sort("key").map_batches(_edges, batch_size=None, batch_format="numpy")
    # The pull-based sort runs its tasks in ordinary workers. Ray 2.60's default (SHUFFLE_V2)
    # runs shuffle maps in workers of their own runtime env, and on a small node each execution
    # paid ~5 s starting them (measured on 2 CPUs: 20k documents in 7.2 s against 1.7 s). The
    # dataset's context is the caller's, so the setting is put back once the edges are in.
    context = grouped.context
    saved = context.shuffle_strategy
    context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        return resolve(grouped.iter_batches(batch_size=None, batch_format="numpy"))
    finally:
        context.shuffle_strategy = saved


def resolve(blocks: Iterable[dict[str, np.ndarray]]) -> Duplicates:
    """The driver's half of `find_duplicates`: `_edges` output of every block to `Duplicates`."""
    parts = list(blocks)
    if not parts:
        return Duplicates()
    cols = {c: np.concatenate([p[c] for p in parts]) for c in ("key", "a", "b", "is_exact")}
    edge = cols["b"] >= 0
    a, b, exact = cols["a"][edge], cols["b"][edge], cols["is_exact"][edge]

    # Runs cut across blocks: join the pieces' lowest orders, key by key.
    ends = {
        "key": cols["key"][~edge],
        "order": cols["a"][~edge],
        "is_exact": cols["is_exact"][~edge],
    }
    cut = _edges(ends)
    stitched = cut["b"] >= 0
    a = np.concatenate([a, cut["a"][stitched]])
    b = np.concatenate([b, cut["b"][stitched]])
    exact = np.concatenate([exact, cut["is_exact"][stitched]])
    loop = a == b  # a run's two ends in one block (or an order given twice): no information
    a, b, exact = a[~loop], b[~loop], exact[~loop]
    if len(a) == 0:
        return Duplicates()

    nodes, keep = _components(a, b)
    # Every `b` of an exact-key edge has a lower order with the same text.
    exact_copy = np.zeros(len(nodes), dtype=bool)
    exact_copy[np.searchsorted(nodes, b[exact])] = True
    removed = nodes != keep
    dups = Duplicates()
    for is_exact, target in ((True, dups.exact), (False, dups.fuzzy)):
        sel = removed & (exact_copy == is_exact)
        target.update(zip(nodes[sel].tolist(), keep[sel].tolist(), strict=True))
    return dups
