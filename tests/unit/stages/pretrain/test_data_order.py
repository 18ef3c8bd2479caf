"""The data-order record: every (step, sequence, document, tokens) row agrees with curate's own
token-by-token trace (`pack.trace`), lookups answer "seen before step N?", and a resumed record
continues where the checkpoint left it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cairn.stages.curate import pack
from cairn.stages.pretrain import data_order

SEQ_LEN = 8


def _dataset(root: Path, lengths: list[int], seed: int = 0) -> Path:
    """A dataset directory with packing info for documents of `lengths` tokens, shuffled."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    offsets = np.concatenate([[0], np.cumsum(np.array(lengths)[order])[:-1]]).astype(np.int64)
    (root / "train").mkdir(parents=True)
    np.savez(root / "train" / pack.PACKING, documents=order.astype(np.int64), offsets=offsets)
    (root / "documents.jsonl").write_text(
        "".join(
            json.dumps({"id": f"doc{i:03d}", "split": "train"}) + "\n" for i in range(len(lengths))
        )
    )
    return root


def _checkpoint(root: Path, batches: np.ndarray) -> Path:
    root.mkdir(parents=True)
    data_order.save(list(batches), root)
    return root


def test_rows_agree_with_curates_token_trace(tmp_path: Path) -> None:
    lengths = [3, 17, 5, 1, 40, 9, 2, 30, 8, 11, 6]
    ds = _dataset(tmp_path / "ds", lengths)
    rows = sum(lengths) // SEQ_LEN
    rng = np.random.default_rng(1)
    batches = np.stack([rng.permutation(rows)[:4] for _ in range(6)])  # 6 steps × 4 sequences
    ckpt = _checkpoint(tmp_path / "ckpt", batches)
    n = data_order.export(ckpt, ds, SEQ_LEN, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / data_order.FILE).to_pylist()
    assert n == len(table)
    ids = [json.loads(x)["id"] for x in (ds / "documents.jsonl").read_text().splitlines()]
    expected = Counter()
    for step, batch in enumerate(batches, start=1):
        for seq in batch:
            for col in range(SEQ_LEN):
                doc = ids[pack.trace(ds / "train", int(seq), col, SEQ_LEN)]
                expected[(step, int(seq), doc)] += 1
    got = Counter({(r["step"], r["sequence"], r["document"]): r["tokens"] for r in table})
    assert got == expected
    assert sum(got.values()) == batches.size * SEQ_LEN


def test_lookup_answers_seen_before_step(tmp_path: Path) -> None:
    lengths = [8] * 12  # one document per sequence: easy to reason about
    ds = _dataset(tmp_path / "ds", lengths, seed=3)
    with np.load(ds / "train" / pack.PACKING) as p:
        doc_of_row = [f"doc{int(d):03d}" for d in p["documents"]]
    batches = np.array([[0, 1], [2, 3], [4, 0]])  # row 0 is seen at steps 1 and 3
    ckpt = _checkpoint(tmp_path / "ckpt", batches)
    data_order.export(ckpt, ds, SEQ_LEN, tmp_path / "out")
    out = tmp_path / "out"

    twice = data_order.lookup(out, doc_of_row[0])
    assert (twice["seen"], twice["steps"], twice["first_step"]) == (True, [1, 3], 1)
    assert twice["tokens"] == 2 * SEQ_LEN and twice["sequences"] == [0]
    late = data_order.lookup(out, doc_of_row[4], before=2)
    assert late["seen"] is False and late["before"] == 2
    assert data_order.lookup(out, doc_of_row[4])["steps"] == [3]
    never = data_order.lookup(out, doc_of_row[11])
    assert never["seen"] is False and never["steps"] == []
    with pytest.raises(ValueError, match="records steps 1..3 only"):
        data_order.lookup(out, doc_of_row[0], before=4)
    summary = data_order.summary(out)
    assert summary == {
        "checkpoint": str(out),
        "steps_recorded": 3,
        "sequences": 5,
        "documents": 5,
        "tokens": 6 * SEQ_LEN,
    }


def test_save_and_load_round_trip_and_missing_record(tmp_path: Path) -> None:
    batches = [np.array([5, 1, 7]), np.array([2, 2, 0])]
    data_order.save(batches, tmp_path)
    back = data_order.load(tmp_path)
    assert [b.tolist() for b in back] == [[5, 1, 7], [2, 2, 0]]
    assert data_order.load(tmp_path / "elsewhere") == []


def test_a_dataset_without_packing_info_still_records_sequences(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    (ds / "train").mkdir(parents=True)
    ckpt = _checkpoint(tmp_path / "ckpt", np.array([[3, 4], [1, 0]]))
    data_order.export(ckpt, ds, SEQ_LEN, tmp_path / "out")
    rows = pq.read_table(tmp_path / "out" / data_order.FILE).to_pylist()
    assert [(r["step"], r["sequence"], r["document"]) for r in rows] == [
        (1, 3, None),
        (1, 4, None),
        (2, 1, None),
        (2, 0, None),
    ]
