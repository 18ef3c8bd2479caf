"""The text primitives curate's filters share: the normalised form, its digest, its words.

Several filters must agree on these (the length filter counts the words `normalise` leaves, exact
dedup and the train/validation split key on `digest`, MinHash shingles `words`), so they live in
one leaf module that imports nothing else of curate: any filter can use them at import time
without pulling in the step's config.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata


def normalise(text: str) -> str:
    """NFC, every run of whitespace (newlines included) made one space, ends stripped.

    NFC first, so that the same text typed with combining accents or precomposed letters
    becomes the same string and the same tokens, and dedup sees it as the same document.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def digest(text: str) -> bytes:
    """sha256 of a normalised text: the key of exact dedup and of the train/validation split."""
    return hashlib.sha256(text.encode("utf-8")).digest()


# Words: lowercase, a word is a maximal run of letters, digits or underscores (Python's `\w`);
# everything else (punctuation, symbols, whitespace) only separates words. ASCII text, the common
# case, takes a byte-level fast path with exactly the same result as the regex.
_WORD = re.compile(r"\w+")
_ASCII_WORDS = bytes(
    (c + 32 if 65 <= c <= 90 else c) if chr(c).isalnum() or c == 95 else 32 for c in range(128)
) + bytes(range(128, 256))


def words(text: str) -> list[bytes]:
    """The words of `text` as MinHash sees them: lowercased, punctuation stripped, UTF-8."""
    if text.isascii():
        return text.encode().translate(_ASCII_WORDS).split()
    return " ".join(_WORD.findall(text.lower())).encode().split()
