"""MinHash keys for dedup: what each document contributes, computed where it was read.

Web-scale corpora repeat themselves: mirrors, boilerplate, the same article with a changed date.
Exact dedup (same normalised text) catches copies; MinHash LSH catches near-copies. Each document
gets `bands` keys, each summarising `rows` MinHash values of its word n-grams; two documents of
n-gram Jaccard similarity s share at least one key with probability 1 - (1 - s**rows)**bands, an
S-curve that rises around (1/bands)**(1/rows) (about 0.72 for the defaults, as in datatrove and
the FineWeb/Gopher pipelines).

`signatures` / `exact_keys` work per document, vectorised over a batch with numpy (word hashes
are the only per-word Python call), so they run inside the scan's Ray Data workers. Same text,
same keys, in any process, on any run: nothing here uses Python's salted `hash()` or any state
outside the text and the config. Grouping the keys across the corpus is the dedup phase
(`dedup.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import xxhash
from pydantic import BaseModel, ConfigDict, Field

from cairn.stages.curate.text import digest, words

_U64 = np.uint64
_MASK64 = (1 << 64) - 1
MIX = _U64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, odd: spreads sequence positions
_SHINGLES_PER_CHUNK = 2048  # shingles × 112 hashes × 4 bytes ≈ 1 MB: stays in L2, measured fastest


class FuzzyConfig(BaseModel):
    """Near-duplicate removal with MinHash LSH over word n-grams."""

    model_config = ConfigDict(extra="forbid")

    ngram: int = Field(
        5,
        ge=1,
        le=64,
        description="words per shingle: documents are compared as sets of overlapping word "
        "n-grams; a smaller n also matches looser rewordings but makes unrelated texts share "
        "common phrases (a document shorter than n words is one shingle)",
    )
    bands: int = Field(
        14,
        ge=1,
        le=1024,
        description="LSH bands: two documents are candidates when all the MinHash values of "
        "one band agree; more bands catch less similar pairs (threshold ~ (1/bands)**(1/rows)) "
        "and cost one more shuffled key per document",
    )
    rows: int = Field(
        8,
        ge=1,
        le=1024,
        description="MinHash values per band: more rows make the cutoff higher and sharper; "
        "bands x rows hash functions are computed per shingle",
    )
    seed: int = Field(
        1,
        ge=0,
        description="seeds the hash functions; a different seed changes which borderline "
        "pairs collide",
    )

    @property
    def threshold(self) -> float:
        """The Jaccard similarity at which a pair becomes more likely to be caught than not."""
        return float((1.0 / self.bands) ** (1.0 / self.rows))


# --- per-document keys ------------------------------------------------------------------------


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, in place: every output bit depends on every input bit."""
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def _combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One well-mixed uint64 per position from equal-length uint64 arrays, order-sensitive.

    A polynomial in an odd multiplier (mod 2**64), mixed once at the end. The parts are
    themselves 64-bit hashes, so two different sequences meet only by chance (~2**-64).
    """
    acc = parts[0].astype(_U64, copy=True)
    for p in parts[1:]:
        acc *= MIX
        acc += p
    return mix64(acc)


def _permutations(cfg: FuzzyConfig) -> tuple[np.ndarray, np.ndarray]:
    """`bands*rows` hash functions x -> a*x + b (mod 2**32), a odd, a bijection each.

    Derived with SplitMix64 from the seed rather than a numpy RNG, whose streams may change
    between numpy versions: the same config must give the same keys forever.
    """
    n = cfg.bands * cfg.rows
    start = _U64((cfg.seed * int(MIX)) & _MASK64)  # Python ints: numpy scalars warn on overflow
    counter = (np.arange(1, 2 * n + 1, dtype=_U64) + start) * MIX
    params = (mix64(counter) >> _U64(32)).astype(np.uint32)
    return params[:n] | np.uint32(1), params[n:]


def _shingles(texts: Sequence[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word n-gram of every text (uint64), and each text's first shingle."""
    toks = [words(t) for t in texts]
    counts = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    # A stable hash per word (xxh3 of its UTF-8 bytes): the one per-word Python call; measured
    # faster than dictionary-encoding the batch and hashing each distinct word once.
    flat = list(itertools.chain.from_iterable(toks))
    h = np.fromiter(map(xxhash.xxh3_64_intdigest, flat), dtype=_U64, count=len(flat))
    word_start = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=word_start[1:])

    n_shingles = np.maximum(counts - ngram + 1, 1)  # a short document is one shingle
    first = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(n_shingles, out=first[1:])
    out = np.empty(first[-1], dtype=_U64)

    long = counts >= ngram
    if long.any() and len(h) >= ngram:
        span = len(h) - ngram + 1
        grams = _combine([h[k : k + span] for k in range(ngram)])
        # n-grams starting in one document and ending in the next are dropped here
        pos = np.arange(span, dtype=np.int64)
        doc = np.repeat(np.arange(len(texts)), counts)[:span]
        valid = pos - word_start[doc] <= counts[doc] - ngram
        out[np.repeat(long, n_shingles)] = grams[valid]
    for i in np.flatnonzero(~long):  # rare: documents shorter than n words
        c = int(counts[i])
        if c:
            one = [h[word_start[i] + k : word_start[i] + k + 1] for k in range(c)]
            out[first[i]] = _combine(one)[0]
        else:  # no words at all: the text itself, so only identical texts can match
            out[first[i]] = xxhash.xxh3_64_intdigest(texts[i].encode())
    return out, first


def minima(texts: Sequence[str], cfg: FuzzyConfig) -> np.ndarray:
    """The MinHash values of each text: uint32, shape (len(texts), cfg.bands * cfg.rows).

    The share of positions where two rows agree estimates the texts' n-gram Jaccard similarity.
    """
    a, b = _permutations(cfg)
    mins = np.empty((len(texts), len(a)), dtype=np.uint32)
    if not texts:
        return mins
    shingles, first = _shingles(texts, cfg.ngram)
    # 32-bit hash values: each shingle's top 32 bits through 32-bit affine bijections. Half the
    # memory traffic of 64 bits (≈1.5x faster, measured); two distinct 32-bit minima of one band
    # colliding by chance is ~2**-32 per value, and a band needs `rows` of them to agree.
    x = (shingles >> _U64(32)).astype(np.uint32)
    buf = np.empty((0, len(a)), dtype=np.uint32)
    doc = 0
    while doc < len(texts):
        # as many whole documents as fit in one chunk of shingles (at least one)
        end = int(np.searchsorted(first, first[doc] + _SHINGLES_PER_CHUNK, side="right")) - 1
        end = min(max(end, doc + 1), len(texts))
        lo, hi = int(first[doc]), int(first[end])
        if buf.shape[0] < hi - lo:
            buf = np.empty((hi - lo, len(a)), dtype=np.uint32)
        v = buf[: hi - lo]
        np.multiply(x[lo:hi, None], a, out=v)
        np.add(v, b, out=v)
        mins[doc:end] = np.minimum.reduceat(v, first[doc:end] - lo, axis=0)
        doc = end
    return mins


def signatures(texts: Sequence[str], cfg: FuzzyConfig) -> np.ndarray:
    """One LSH key per band for each text: uint64, shape (len(texts), cfg.bands).

    Two texts share a band's key exactly when the `rows` MinHash values of that band agree.
    """
    per_band = minima(texts, cfg).astype(_U64).reshape(len(texts), cfg.bands, cfg.rows)
    return _combine([per_band[:, :, r] for r in range(cfg.rows)])


def exact_keys(texts: Sequence[str]) -> np.ndarray:
    """The exact-dedup key of each (normalised) text: bytes 8-16 of its sha256, as uint64.

    The same key `scan` stores from `text.digest`: bytes 0-8 of that digest place a document
    in train or validation, so the split and the dedup key stay independent.
    """
    raw = b"".join(digest(t)[8:16] for t in texts)
    return np.frombuffer(raw, dtype=">u8").astype(_U64)


def jaccard(a: str, b: str, ngram: int) -> float:
    """Exact Jaccard similarity of two texts' word n-gram sets (what MinHash estimates)."""

    def grams(text: str) -> set[tuple[bytes, ...]]:
        w = words(text)
        if len(w) < ngram:
            return {tuple(w)}
        return {tuple(w[i : i + ngram]) for i in range(len(w) - ngram + 1)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb) if ga or gb else 1.0


def add_keys(
    batch: dict[str, np.ndarray], cfg: FuzzyConfig | None, text_column: str = "text"
) -> dict[str, np.ndarray]:
    """A Ray Data `map_batches` function: `exact` (and `bands` when cfg is set) from the text."""
    texts = [str(t) for t in batch[text_column]]
    out = dict(batch)
    out["exact"] = exact_keys(texts)
    if cfg is not None:
        out["bands"] = signatures(texts, cfg)
    return out
