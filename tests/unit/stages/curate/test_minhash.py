"""Tests of MinHash LSH dedup (`minhash` keys, `dedup` clusters): keys, collisions, clusters.

The key tests run in-process on passages of the shipped Shakespeare corpus. The clustering tests
run `find_duplicates` on the session's local Ray, on small datasets with known answers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from cairn.stages.curate import dedup, minhash
from cairn.stages.curate.dedup import Duplicates
from cairn.stages.curate.minhash import FuzzyConfig
from cairn.stages.curate.text import digest, words
from tests import REPO

PLAYS = REPO / "workflows" / "data" / "shakespeare" / "plays.jsonl"
CFG = FuzzyConfig()


def passages(n: int, words: int = 200) -> list[str]:
    """`n` distinct, non-overlapping passages of real text, `words` words each."""
    out: list[str] = []
    with PLAYS.open(encoding="utf-8") as f:
        for line in f:
            w = json.loads(line)["text"].split()
            out += [" ".join(w[i : i + words]) for i in range(0, len(w) - words, words)]
            if len(out) >= n:
                return out[:n]
    raise AssertionError(f"{PLAYS} holds fewer than {n} passages of {words} words")


def edit(text: str, fraction: float, seed: int) -> str:
    """`text` with about `fraction` of its words replaced by words not in the corpus."""
    rng = random.Random(seed)
    w = text.split()
    for i in rng.sample(range(len(w)), max(1, round(fraction * len(w)))):
        w[i] = f"qz{rng.randrange(10**9)}"
    return " ".join(w)


def share_band(a: str, b: str, cfg: FuzzyConfig = CFG) -> bool:
    sig = minhash.signatures([a, b], cfg)
    return bool((sig[0] == sig[1]).any())


# --- keys --------------------------------------------------------------------------------------


def test_config_threshold_and_unknown_fields() -> None:
    assert CFG.threshold == pytest.approx((1 / 14) ** (1 / 8))
    assert 0.71 < CFG.threshold < 0.73
    with pytest.raises(ValidationError, match="band"):
        FuzzyConfig(band=10)  # a typo is an error, not a silently ignored field
    with pytest.raises(ValidationError):
        FuzzyConfig(rows=0)


def test_words_rule() -> None:
    assert words("Hello, WORLD! It's  2-for-1_x") == [
        b"hello",
        b"world",
        b"it",
        b"s",
        b"2",
        b"for",
        b"1_x",
    ]
    # the non-ASCII path follows the same rule
    assert words("Ça va — très BIEN, «merci»") == [
        "ça".encode(),
        b"va",
        "très".encode(),
        b"bien",
        b"merci",
    ]


def test_signatures_shape_and_identity() -> None:
    texts = passages(6)
    sig = minhash.signatures(texts + [texts[0]], CFG)
    assert sig.shape == (7, CFG.bands) and sig.dtype == np.uint64
    assert (sig[0] == sig[6]).all()
    # case and punctuation do not matter, words do
    loud = texts[1].upper().replace(" ", " ... ")
    assert (minhash.signatures([loud], CFG)[0] == sig[1]).all()
    assert minhash.signatures([], CFG).shape == (0, CFG.bands)
    # the signature of a text does not depend on its batch
    assert (minhash.signatures(texts[3:5], CFG) == sig[3:5]).all()


def test_short_and_wordless_documents() -> None:
    sig = minhash.signatures(["to be", "to be", "be to", "", "!!!", "???", "one two three"], CFG)
    assert (sig[0] == sig[1]).all()  # shorter than n words: one shingle of all the words
    assert not (sig[0] == sig[2]).any()  # word order matters
    assert not (sig[3] == sig[4]).any() and not (sig[4] == sig[5]).any()  # no words: the text


def test_signatures_are_the_same_in_another_process() -> None:
    texts = passages(4) + ["Ça va — très bien", "short", ""]
    code = (
        "import json, sys\n"
        "from cairn.stages.curate import minhash\n"
        "texts = json.loads(sys.stdin.read())\n"
        "print(json.dumps(minhash.signatures(texts, minhash.FuzzyConfig(seed=7)).tolist()))\n"
    )
    theirs = []
    for hash_seed in ("1", "2"):  # Python's own str hash differs between these processes
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(texts),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        theirs.append(json.loads(done.stdout))
    ours = minhash.signatures(texts, FuzzyConfig(seed=7)).tolist()
    assert theirs[0] == ours and theirs[1] == ours
    assert ours != minhash.signatures(texts, FuzzyConfig(seed=8)).tolist()


def test_exact_keys_match_the_digest() -> None:
    keys = minhash.exact_keys(["a", "b", "a"])
    assert keys.dtype == np.uint64
    assert keys[0] == keys[2] != keys[1]
    assert int(keys[1]) == int.from_bytes(digest("b")[8:16], "big")


def test_minima_estimate_jaccard() -> None:
    """The share of equal MinHash values is an unbiased estimate of n-gram Jaccard."""
    base = passages(200)
    edited = [edit(t, 0.05, seed=i) for i, t in enumerate(base)]
    true = np.array([minhash.jaccard(a, b, CFG.ngram) for a, b in zip(base, edited, strict=True)])
    est = (minhash.minima(base, CFG) == minhash.minima(edited, CFG)).mean(axis=1)
    assert 0.5 < true.mean() < 0.8  # the edits leave pairs around the threshold
    # 200 pairs x 112 hashes: the mean error of an unbiased estimator is ~0.003
    assert abs((est - true).mean()) < 0.015
    assert np.abs(est - true).max() < 0.25


def test_near_duplicates_collide_and_unrelated_do_not() -> None:
    base = passages(300)
    near = [edit(t, 0.02, seed=i) for i, t in enumerate(base)]
    sig, sig_near = minhash.signatures(base, CFG), minhash.signatures(near, CFG)
    hits = (sig == sig_near).any(axis=1)
    # 2% of words edited: Jaccard ~0.82, so P(share a band) = 1 - (1 - J**8)**14 ~ 0.95
    assert hits.mean() > 0.88
    # 3%: Jaccard ~0.75, P ~ 0.78
    near3 = minhash.signatures([edit(t, 0.03, seed=i) for i, t in enumerate(base)], CFG)
    assert (sig == near3).any(axis=1).mean() > 0.65
    # unrelated passages never share a key (300 x 299 / 2 pairs x 14 bands)
    keys = sig.ravel()
    assert len(np.unique(keys)) == len(keys)


# --- clustering on Ray ---------------------------------------------------------------------------


def dataset(texts: list[str], orders: list[int], cfg: FuzzyConfig | None, blocks: int = 1):
    import ray

    batch = minhash.add_keys({"text": np.array(texts, dtype=object)}, cfg)
    cols: dict[str, pa.Array] = {
        "order": pa.array(orders, pa.int64()),
        "exact": pa.array(batch["exact"]),
    }
    if cfg is not None:  # as the curate scan writes it: a fixed-size list column
        cols["bands"] = pa.FixedSizeListArray.from_arrays(
            pa.array(batch["bands"].ravel()), cfg.bands
        )
    return ray.data.from_arrow(pa.table(cols)).repartition(blocks)


def chain(c0: str) -> tuple[str, str, str]:
    """c0 ~ c1 ~ c2 where c0 and c2 share no band: only transitivity joins them."""
    c1 = edit(c0, 0.03, seed=1)
    assert share_band(c0, c1)
    for seed in range(2, 200):
        c2 = edit(c1, 0.03, seed=seed)
        if share_band(c1, c2) and not share_band(c0, c2):
            return c0, c1, c2
    raise AssertionError("no seed gave a chain")


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[int], Duplicates]:
    """Documents and orders with the answer a correct dedup gives."""
    a, b, d, c = passages(4, words=250)
    c0, c1, c2 = chain(c)
    near_a = edit(a, 0.01, seed=5)
    docs = {  # order -> text; rows are handed over out of order on purpose
        40: a,
        3: b,
        17: a,  # an exact copy of 40 comes earlier: 17 is kept, 40 removed (exact)
        55: near_a,  # fuzzy copy of 17's text
        56: near_a,  # exact copy of 55, which is itself removed: still exact
        9: c2,
        21: c1,
        30: c0,
        12: d,
    }
    want = Duplicates(exact={40: 17, 56: 17}, fuzzy={55: 17, 21: 9, 30: 9})
    return list(docs.values()), list(docs.keys()), want


@pytest.mark.ray
def test_clusters_with_known_answer(ray_local, corpus) -> None:
    texts, orders, want = corpus
    ds = dataset(texts, orders, CFG)
    strategy = ds.context.shuffle_strategy
    got = dedup.find_duplicates(ds, CFG)
    assert got == want
    assert ds.context.shuffle_strategy == strategy  # borrowed for the sort, then given back


@pytest.mark.ray
def test_exact_only_without_config(ray_local, corpus) -> None:
    texts, orders, _ = corpus
    got = dedup.find_duplicates(dataset(texts, orders, None), None)
    assert got == Duplicates(exact={40: 17, 56: 55})


@pytest.mark.ray
@pytest.mark.parametrize("blocks", [1, 3, 8])
def test_same_answer_whatever_the_blocks(ray_local, blocks: int) -> None:
    base = passages(60)
    rng = random.Random(0)
    texts, orders = list(base), list(range(len(base)))
    for i in range(40):  # copies, near-copies and copies of copies, at random later orders
        src = rng.randrange(len(texts))
        texts.append(texts[src] if i % 3 == 0 else edit(texts[src], 0.01, seed=i))
        orders.append(len(orders))
    perm = rng.sample(range(len(texts)), len(texts))
    ds = dataset([texts[i] for i in perm], [orders[i] for i in perm], CFG, blocks)
    got = dedup.find_duplicates(ds, CFG)
    reference = dedup.find_duplicates(dataset(texts, orders, CFG, 1), CFG)
    assert got == reference
    assert 30 <= len(got.exact) + len(got.fuzzy) <= 40 and len(got.exact) >= 13
    assert all(keep < gone for gone, keep in {**got.exact, **got.fuzzy}.items())


@pytest.mark.ray
def test_tensor_column_from_map_batches(ray_local) -> None:
    """The `bands` column may also be the tensor column map_batches makes from a 2-D array."""
    import ray

    texts = passages(5) + passages(2)
    ds = ray.data.from_items([{"order": i, "text": t} for i, t in enumerate(texts)])
    ds = ds.map_batches(minhash.add_keys, fn_kwargs={"cfg": CFG}, batch_format="numpy")
    got = dedup.find_duplicates(ds.select_columns(["order", "exact", "bands"]), CFG)
    assert got == Duplicates(exact={5: 0, 6: 1})


@pytest.mark.ray
def test_no_documents_and_no_duplicates(ray_local) -> None:
    empty = dataset([], [], CFG)
    assert dedup.find_duplicates(empty, CFG) == Duplicates()
    assert dedup.find_duplicates(dataset(passages(3), [7, 8, 9], CFG), CFG) == Duplicates()


@pytest.mark.ray
def test_missing_column_is_a_clear_error(ray_local) -> None:
    import ray

    ds = ray.data.from_items([{"order": 0, "exact": 1}])
    with pytest.raises(Exception, match="needs a column 'bands'"):
        dedup.find_duplicates(ds, CFG)


# --- the driver's half, without Ray --------------------------------------------------------------


def test_runs_cut_across_blocks_are_joined() -> None:
    """One key's rows split over two blocks still form one cluster, kept at its lowest order."""
    key = np.array([7, 7, 7, 7, 9, 9], dtype=np.uint64)
    order = np.array([50, 20, 40, 10, 60, 61], dtype=np.int64)
    exact = np.array([False] * 4 + [True] * 2)
    first = dedup._edges({"key": key[:2], "order": order[:2], "is_exact": exact[:2]})
    second = dedup._edges({"key": key[2:], "order": order[2:], "is_exact": exact[2:]})
    got = dedup.resolve([first, second])
    assert got == Duplicates(exact={61: 60}, fuzzy={20: 10, 40: 10, 50: 10})


def test_components_follow_chains() -> None:
    a = np.array([5, 3, 9, 100, 7], dtype=np.int64)
    b = np.array([3, 9, 1, 200, 8], dtype=np.int64)
    nodes, keep = dedup._components(a, b)
    assert dict(zip(nodes.tolist(), keep.tolist(), strict=True)) == {
        1: 1,
        3: 1,
        5: 1,
        9: 1,
        7: 7,
        8: 7,
        100: 100,
        200: 100,
    }
