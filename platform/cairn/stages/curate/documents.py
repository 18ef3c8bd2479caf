"""The kept documents as the driver tracks them, and documents.jsonl, their record.

After the scan the driver holds no text: what it keeps per document is a few numbers (id,
source, split, token count: ~40 bytes), so memory grows with the number of documents at that rate
and not with their text (bench/curation.py measures it). Tokenize fills them in, in order;
packing reads where each document's tokens are, and documents.jsonl writes them out with how
often each was packed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Documents:
    """The kept documents, a few numbers each, in order (the rows of documents.jsonl)."""

    ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)  # first token in its split's token file
    tokens: list[int] = field(default_factory=list)


def write(path: Path, docs: Documents, uses: np.ndarray) -> None:
    """documents.jsonl: one line per kept document, with the times it was packed (`uses`)."""
    with open(path, "w", encoding="utf-8") as f:
        for i, doc_id in enumerate(docs.ids):
            row = {
                "id": doc_id,
                "source": docs.origins[i],
                "split": docs.split[i],
                "chars": docs.chars[i],
                "tokens": docs.tokens[i],
                "uses": int(uses[i]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
