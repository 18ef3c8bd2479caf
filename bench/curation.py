"""Curation throughput: Cairn's dedup against datatrove and datasketch, and its tokenization.

Builds a corpus from the real text shipped in workflows/data (Shakespeare's plays and poems,
and the Python documentation when it is there), plants exact copies and near-copies in it, and
runs three MinHash LSH dedups with the same parameters (word 5-grams, 14 bands x 8 rows = 112
hashes, threshold ~0.72), in one process, on this machine:
  - cairn:      texts in memory -> Ray Data map_batches(minhash.add_keys) -> dedup.find_duplicates
                (exact and near duplicates in one pass), in a Ray session of 2 CPUs started and
                warmed up before timing;
  - datatrove:  MinhashDedupSignature -> Buckets -> Cluster -> Filter, LocalPipelineExecutor
                with 2 workers, documents from JSONL files written before timing;
  - datasketch: MinHash.generator + MinHashLSH(params=(14, 8)) in one process: each document is
                queried against the earlier ones, then inserted; it is removed if it collides.
Each is warmed up on a small input, then timed `--repeats` times (best kept, runs interleaved so
that the machine's noise hits all three alike). Precision and recall are against the planted
copies: a correct dedup removes exactly those (every copy comes after its source).

The corpus. Originals are passages of 100-300 words: first distinct, non-overlapping passages of
the text; when --docs asks for more than the text holds, further ones are mosaics of runs of 2-6
consecutive lines from random places. Originals that are near-duplicates of each other (the
Passionate Pilgrim reprints two Sonnets; mosaics may share runs) are dropped before planting:
candidates from a low-threshold LSH (32 bands x 4 rows, ~0.42), confirmed by exact 5-gram
Jaccard >= 0.4. Then 10% of the documents are exact copies and 20% near-copies with 2-5% of their
words substituted, deleted or inserted (seeded), each placed at a random later position.

Tokenization: a 2048-token BPE trained by `tokenizer.train` on the same documents; Cairn's
`tokenizer.table_encoder` (what the pipeline runs: batches of 4,096 documents, ids + EOS into an
Arrow list column) against raw `Tokenizer.encode_batch_fast` on all texts at once, best of 3.

    .venv/bin/python bench/curation.py [--docs 20000] [--repeats 3] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "workflows" / "data"
NGRAM, BANDS, ROWS = 5, 14, 8


# --- the corpus --------------------------------------------------------------------------------


@dataclass
class Corpus:
    texts: list[str]
    copies: dict[int, tuple[int, str]]  # index of a planted copy -> (index of source, kind)
    near_jaccard: list[float] = field(default_factory=list)  # of each near-copy to its source
    contiguous: int = 0  # originals cut from the text as it stands
    mosaic: int = 0  # originals assembled from runs of lines
    dropped: int = 0  # originals dropped as natural near-duplicates of earlier ones


def source_lines() -> list[list[str]]:
    """Non-blank lines of every shipped text, one list per play scene / poem / reST file."""
    texts = [json.loads(line)["text"] for line in (DATA / "shakespeare" / "plays.jsonl").open()]
    for pattern in ("shakespeare/poems/*.txt", "python-docs/**/*.rst"):
        texts += [p.read_text(encoding="utf-8") for p in sorted(DATA.glob(pattern))]
    return [[ln.strip() for ln in t.splitlines() if ln.strip()] for t in texts]


def originals(n: int, rng: random.Random) -> tuple[list[str], int]:
    """`n` documents of 100-300 words: distinct passages first, then mosaics of line runs."""
    docs: list[str] = []
    files = source_lines()
    for lines in files:
        cur: list[str] = []
        goal, words = rng.randint(100, 300), 0
        for ln in lines:
            cur.append(ln)
            words += len(ln.split())
            if words >= goal:
                docs.append("\n".join(cur))
                cur, goal, words = [], rng.randint(100, 300), 0
    rng.shuffle(docs)
    contiguous = min(len(docs), n)
    docs = docs[:n]
    pool = [ln for lines in files for ln in lines]
    while len(docs) < n:
        cur, goal, words = [], rng.randint(100, 300), 0
        while words < goal:
            start = rng.randrange(len(pool))
            run = pool[start : start + rng.randint(2, 6)]
            cur += run
            words += sum(len(ln.split()) for ln in run)
        docs.append("\n".join(cur))
    return docs, contiguous


def drop_natural_duplicates(docs: list[str]) -> list[str]:
    """Docs minus any that is a near-duplicate (5-gram Jaccard >= 0.4) of an earlier one."""
    from cairn.stages.curate import minhash

    sig = minhash.signatures(docs, minhash.FuzzyConfig(bands=32, rows=4, seed=99))
    drop: set[int] = set()
    for band in sig.T:
        idx = np.argsort(band, kind="stable")
        same = np.flatnonzero(band[idx][1:] == band[idx][:-1])
        for i, j in zip(idx[same].tolist(), idx[same + 1].tolist(), strict=True):
            lo, hi = min(i, j), max(i, j)
            if hi not in drop and minhash.jaccard(docs[lo], docs[hi], NGRAM) >= 0.4:
                drop.add(hi)
    return [d for i, d in enumerate(docs) if i not in drop]


def perturb(text: str, rate: float, vocab: list[str], rng: random.Random) -> str:
    """`text` with `rate` of its words substituted, deleted or inserted (one edit per word)."""
    lines = [ln.split() for ln in text.split("\n")]
    where = [(i, j) for i, ln in enumerate(lines) for j in range(len(ln))]
    for i, j in sorted(rng.sample(where, max(1, round(rate * len(where)))), reverse=True):
        op = rng.randrange(3)
        if op == 0:
            lines[i][j] = rng.choice(vocab)
        elif op == 1:
            del lines[i][j]
        else:
            lines[i].insert(j, rng.choice(vocab))
    return "\n".join(" ".join(ln) for ln in lines)


def build_corpus(n: int, seed: int) -> Corpus:
    from cairn.stages.curate import minhash

    rng = random.Random(seed)
    n_exact, n_near = round(0.10 * n), round(0.20 * n)
    want = n - n_exact - n_near
    docs, contiguous = originals(want + want // 20, rng)  # 5% spare for the dropped ones
    clean = drop_natural_duplicates(docs)
    if len(clean) < want:
        raise SystemExit(f"only {len(clean)} distinct originals for {want}: lower --docs")
    dropped = len(docs) - len(clean)
    orig = clean[:want]
    vocab = sorted({w for d in orig[:2000] for w in d.split()})
    # (position key, text, source slot, kind): copies get keys after their source's slot
    rows: list[tuple[float, str, int, str]] = [(float(i), t, -1, "") for i, t in enumerate(orig)]
    for kind, count in (("exact", n_exact), ("near", n_near)):
        for _ in range(count):
            src = rng.randrange(want)
            text = orig[src]
            if kind == "near":
                text = perturb(text, rng.uniform(0.02, 0.05), vocab, rng)
            rows.append((src + 0.5 + rng.random() * (want - src), text, src, kind))
    rows.sort(key=lambda r: r[0])
    slot_to_index = {int(r[0]): i for i, r in enumerate(rows) if r[2] < 0}
    texts = [r[1] for r in rows]
    copies = {i: (slot_to_index[r[2]], r[3]) for i, r in enumerate(rows) if r[2] >= 0}
    near_j = [
        minhash.jaccard(texts[src], texts[i], NGRAM)
        for i, (src, kind) in copies.items()
        if kind == "near"
    ]
    return Corpus(texts, copies, near_j, min(contiguous, want), max(0, want - contiguous), dropped)


# --- the three dedups: each returns the set of removed document indices ------------------------


def cairn_dedup(texts: list[str]) -> set[int]:
    import pyarrow as pa
    import ray

    from cairn.stages.curate import dedup, minhash

    cfg = minhash.FuzzyConfig(ngram=NGRAM, bands=BANDS, rows=ROWS)
    table = pa.table({"order": np.arange(len(texts)), "text": pa.array(texts, pa.large_string())})
    step = max(500, len(texts) // 16)  # blocks of >= 500 documents, enough to keep 2 CPUs busy
    docs = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(texts), step)])
    keyed = docs.map_batches(
        minhash.add_keys, fn_kwargs={"cfg": cfg}, batch_size=None, batch_format="numpy"
    )
    dups = dedup.find_duplicates(keyed.select_columns(["order", "exact", "bands"]), cfg)
    return set(dups.exact) | set(dups.fuzzy)


def datasketch_dedup(texts: list[str]) -> set[int]:
    from datasketch import MinHash, MinHashLSH

    word = re.compile(r"\w+")

    def shingles(text: str) -> list[bytes]:
        w = word.findall(text.lower())
        if len(w) < NGRAM:
            return [" ".join(w).encode()]
        return [" ".join(w[i : i + NGRAM]).encode() for i in range(len(w) - NGRAM + 1)]

    lsh = MinHashLSH(num_perm=BANDS * ROWS, params=(BANDS, ROWS))
    removed = set()
    sigs = MinHash.generator((shingles(t) for t in texts), num_perm=BANDS * ROWS, seed=1)
    for i, m in enumerate(sigs):
        if lsh.query(m):
            removed.add(i)
        lsh.insert(i, m)
    return removed


@contextlib.contextmanager
def stderr_to(path: Path) -> Iterator[None]:
    """datatrove logs every task to stderr (and its forked workers inherit it): park it in a file."""
    sys.stderr.flush()
    saved = os.dup(2)
    with path.open("ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def datatrove_dedup(texts: list[str], work: Path) -> tuple[set[int], float, float]:
    """(removed, seconds to the removed set, seconds including the Filter step)."""
    import struct

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader

    tasks = 2  # one per CPU, each reading one half of the documents
    data = work / "data"
    data.mkdir(parents=True)
    half = (len(texts) + 1) // 2
    offsets = [0, half]
    for r in range(tasks):
        with (data / f"{r:05d}.jsonl").open("w", encoding="utf-8") as f:
            for i in range(offsets[r], min(len(texts), offsets[r] + half)):
                f.write(json.dumps({"text": texts[i], "id": str(i)}) + "\n")
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=1)

    def execute(pipeline: list, n_tasks: int, name: str) -> None:
        LocalPipelineExecutor(
            pipeline, tasks=n_tasks, workers=min(n_tasks, 2), logging_dir=str(work / "logs" / name)
        ).run()

    try:
        with stderr_to(work / "stderr.log"):
            t0 = time.perf_counter()
            execute(
                [JsonlReader(str(data)), MinhashDedupSignature(str(work / "sigs"), config=cfg)],
                tasks,
                "sigs",
            )
            execute(
                [MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=cfg)],
                BANDS,
                "buckets",
            )
            execute(
                [MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=cfg)],
                1,
                "cluster",
            )
            to_removed = time.perf_counter() - t0
            execute(
                [JsonlReader(str(data)), MinhashDedupFilter(str(work / "remove"))], tasks, "filter"
            )
            total = time.perf_counter() - t0
    except Exception:
        print((work / "stderr.log").read_text()[-4000:], file=sys.stderr)
        raise
    removed = set()
    for r in range(tasks):
        path = work / "remove" / f"{r:06d}.remove"
        if path.exists():
            raw = path.read_bytes()
            removed |= {offsets[r] + d for (d,) in struct.iter_unpack("<I", raw)}
    return removed, to_removed, total


# --- measuring ---------------------------------------------------------------------------------


def score(removed: set[int], corpus: Corpus) -> dict[str, float]:
    planted = set(corpus.copies)
    hit = removed & planted
    exact = {i for i, (_, k) in corpus.copies.items() if k == "exact"}
    return {
        "precision": len(hit) / len(removed) if removed else 1.0,
        "recall": len(hit) / len(planted),
        "recall_exact": len(hit & exact) / len(exact),
        "recall_near": len(hit - exact) / len(planted - exact),
        "removed": len(removed),
    }


def best_of(n: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def tokenization(texts: list[str], repeats: int) -> dict[str, float]:
    import pyarrow as pa

    from cairn.stages.curate import tokenizer

    tok = tokenizer.train(texts, 2048)
    # What the curate pipeline runs: its Parquet batches (4,096 rows) through table_encoder,
    # which returns each document's ids plus EOS as one Arrow list column.
    encode = tokenizer.table_encoder(tok)
    tables = [pa.table({"text": texts[i : i + 4096]}) for i in range(0, len(texts), 4096)]
    raw = best_of(repeats, lambda: tok.encode_batch_fast(texts, add_special_tokens=False))
    ours = best_of(repeats, lambda: [encode(t) for t in tables])
    return {"raw_docs_per_s": len(texts) / raw, "cairn_docs_per_s": len(texts) / ours}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=20_000, help="documents, planted copies included")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each dedup (best kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = ap.parse_args()
    say = (lambda *a, **k: None) if args.json else print

    import ray
    from ray.data import DataContext

    corpus = build_corpus(args.docs, args.seed)
    words = [len(t.split()) for t in corpus.texts]
    n_near = len(corpus.near_jaccard)
    lsh_expect = float(np.mean([1 - (1 - j**ROWS) ** BANDS for j in corpus.near_jaccard]))
    say(
        f"corpus: {len(corpus.texts)} documents, {statistics.mean(words):.0f} words on average "
        f"({corpus.contiguous} distinct passages, {corpus.mosaic} mosaics of line runs; "
        f"{corpus.dropped} natural near-duplicates dropped), planted "
        f"{len(corpus.copies) - n_near} exact copies and {n_near} near-copies "
        f"(5-gram Jaccard to source: median {statistics.median(corpus.near_jaccard):.2f})"
    )
    say(
        f"MinHash LSH {BANDS}x{ROWS}, word {NGRAM}-grams, threshold {(1 / BANDS) ** (1 / ROWS):.2f}"
        f": theory says a dedup finds {lsh_expect:.1%} of these near-copies"
    )

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # a line per execution otherwise
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    scratch = tempfile.TemporaryDirectory(prefix="cairn-bench-curation-")
    work = Path(scratch.name)

    def cairn(reserve: bool) -> Callable[[list[str]], set[int]]:
        def run(texts: list[str]) -> set[int]:
            # Ray Data reserves a share of the CPUs for each operator of a plan; on 2 CPUs that
            # left the signature tasks running one at a time (measured 2.14 s -> 1.15 s for the
            # map alone). A dataset takes the settings current when it is created.
            saved = ctx.op_resource_reservation_enabled
            ctx.op_resource_reservation_enabled = reserve
            try:
                return cairn_dedup(texts)
            finally:
                ctx.op_resource_reservation_enabled = saved

        return run

    in_process: dict[str, Callable[[list[str]], set[int]]] = {
        "cairn": cairn(reserve=False),
        "cairn, Ray Data defaults": cairn(reserve=True),
        "datasketch": datasketch_dedup,
    }
    small = corpus.texts[:500]
    for fn in in_process.values():  # warm-ups: worker processes, imports, forkserver
        fn(small)
    datatrove_dedup(small, work / "warm")

    times: dict[str, list[float]] = {k: [] for k in [*in_process, "datatrove"]}
    filter_incl: list[float] = []
    removed: dict[str, set[int]] = {}
    for r in range(args.repeats):  # interleaved, so that the machine's noise hits all alike
        for name, fn in in_process.items():
            t0 = time.perf_counter()
            removed[name] = fn(corpus.texts)
            times[name].append(time.perf_counter() - t0)
        removed["datatrove"], to_removed, total = datatrove_dedup(corpus.texts, work / f"dt{r}")
        times["datatrove"].append(to_removed)
        filter_incl.append(total)
    ray.shutdown()
    scratch.cleanup()

    n = len(corpus.texts)
    best = {k: min(v) for k, v in times.items()}
    dedup = {
        k: {"seconds": best[k], "docs_per_s": n / best[k], **score(removed[k], corpus)}
        for k in best
    }
    results: dict[str, object] = {
        "docs": n,
        "mean_words": statistics.mean(words),
        "planted_exact": len(corpus.copies) - n_near,
        "planted_near": n_near,
        "lsh_theory_recall_near": lsh_expect,
        "dedup": dedup,
        "datatrove_with_filter_seconds": min(filter_incl),
    }
    say(f"\ndedup, best of {args.repeats} (datatrove: to its removed set, the Filter step apart)")
    say(
        f"{'':<26}{'docs/s':>8}{'seconds':>9}{'vs datatrove':>14}{'precision':>11}{'recall':>8}"
        f"{'exact':>7}{'near':>7}"
    )
    for k, v in dedup.items():
        say(
            f"{k:<26}{v['docs_per_s']:>8.0f}{v['seconds']:>9.2f}"
            f"{best['datatrove'] / v['seconds']:>13.2f}x{v['precision']:>11.4f}{v['recall']:>8.3f}"
            f"{v['recall_exact']:>7.3f}{v['recall_near']:>7.3f}"
        )
    say(f"datatrove including its Filter step: {min(filter_incl):.2f} s")

    tok = tokenization(corpus.texts, 3)
    results["tokenization"] = {**tok, "ratio": tok["cairn_docs_per_s"] / tok["raw_docs_per_s"]}
    say(
        f"\ntokenization (vocab 2048, best of 3): raw encode_batch_fast "
        f"{tok['raw_docs_per_s']:.0f} docs/s, cairn encode {tok['cairn_docs_per_s']:.0f} docs/s "
        f"({tok['cairn_docs_per_s'] / tok['raw_docs_per_s']:.2f}x; target >= 0.9x)"
    )
    c, d = dedup["cairn"], dedup["datatrove"]
    say(
        f"goal: >= 2x datatrove's throughput ({best['datatrove'] / best['cairn']:.2f}x), recall "
        f">= ({c['recall']:.3f} vs {d['recall']:.3f}) at precision >= "
        f"({c['precision']:.4f} vs {d['precision']:.4f})"
    )
    if args.json:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
