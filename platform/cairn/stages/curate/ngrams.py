"""Hashes of word n-grams for decontamination: the same on every process, every window at once.

The index is built on the driver and asked on Ray workers, so a gram must hash the same in any
process and on any run: no Python `hash()` (salted per process), only blake2b per word and a
polynomial hash per window of words, modulo 2**64. Documents are many and most are short, so all
windows of all the lengths asked for are hashed in one pass of numpy calls per document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

_MASK = (1 << 64) - 1
_BASE = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_LENGTH_SALT = 0x9E3779B97F4A7C15  # keeps a k-word gram apart from an n-word one
_WORDS: dict[str, int] = {}  # word -> hash, per process: corpora repeat words (Zipf)
_WORDS_MAX = 1 << 20
_POWERS: list[Any] = []  # [B**t, B**-t for t < len] mod 2**64, grown on demand


def word_hashes(words: Sequence[str]) -> np.ndarray:
    """The 64-bit hash of each word (blake2b), cached per process."""
    import numpy as np

    cache = _WORDS
    if len(cache) > _WORDS_MAX:
        cache.clear()
    out = [cache.get(w) or _hash_word(w) for w in words]
    return np.array(out, dtype=np.uint64)


def _hash_word(word: str) -> int:
    h = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    _WORDS[word] = h
    return h


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B**t and B**-t mod 2**64 for t < n (numpy's uint64 products wrap modulo 2**64)."""
    import numpy as np

    if not _POWERS or len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]) if _POWERS else 4096)
        up = np.cumprod(np.full(size, _BASE, dtype=np.uint64))
        down = np.cumprod(np.full(size, pow(_BASE, -1, 1 << 64), dtype=np.uint64))
        one = np.ones(1, dtype=np.uint64)
        _POWERS[:] = [np.concatenate([one, up[:-1]]), np.concatenate([one, down[:-1]])]
    return _POWERS[0], _POWERS[1]


def grams(hashes: np.ndarray, lengths: Sequence[int]) -> np.ndarray:
    """The hash of every window of k words, for each k in `lengths` (<= len(hashes)), at once.

    A polynomial hash h = sum(w[t] * B**(end - t)) over the window, computed from one prefix sum
    of w[t] * B**-t (the difference of two prefixes times B**end), then salted with k and put
    through splitmix64's finaliser so that nearby sums spread over all 64 bits. One pass of
    numpy calls per document whatever the number of lengths: short documents are many.
    """
    import numpy as np

    m = len(hashes)
    up, down = _powers(m + 1)
    prefix = np.zeros(m + 1, dtype=np.uint64)
    np.cumsum(hashes * down[:m], out=prefix[1:])
    parts = [(prefix[k:] - prefix[:-k]) * up[k - 1 : m] for k in lengths]
    g = np.concatenate(parts) if len(parts) > 1 else parts[0]
    salts = np.array([(k * _LENGTH_SALT) & _MASK for k in lengths], dtype=np.uint64)
    g ^= salts[0] if len(parts) == 1 else np.repeat(salts, [len(p) for p in parts])
    g ^= g >> np.uint64(30)
    g *= np.uint64(0xBF58476D1CE4E5B9)
    g ^= g >> np.uint64(27)
    g *= np.uint64(0x94D049BB133111EB)
    g ^= g >> np.uint64(31)
    return g
