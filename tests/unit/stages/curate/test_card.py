"""The curated dataset's data card: the streaming accumulator (`CardStats`) and what
`write_card` writes from dataset.json (PNGs, removed.jsonl, DATA_CARD.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cairn.stages.curate.card import EDGES, CardStats, Lengths
from cairn.stages.curate.card_files import write_card

PLAYS, DOCS = "./data/shakespeare/plays.jsonl", "./data/python-docs"
PNG = b"\x89PNG\r\n\x1a\n"


def _feed(stats: CardStats, batches: list[tuple[str, np.ndarray]]) -> None:
    """What the pipeline does per batch: inputs, removals (short ones), outputs."""
    for source, chars in batches:
        stats.add_input(source, chars, chars // 6)
        short = chars < 100
        for i in np.flatnonzero(short):
            stats.add_removed(source, "min_chars", f"{int(chars[i]):016x}", "x" * int(chars[i]))
        stats.add_output(source, chars[~short], chars[~short] // 4 + 1)


def _batches(seed: int = 0, n: int = 12) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [((PLAYS, DOCS)[i % 2], rng.lognormal(6, 1.5, 200).astype(np.int64)) for i in range(n)]


def test_merging_split_accumulators_equals_one_pass() -> None:
    batches = _batches()
    one = CardStats()
    _feed(one, batches)
    parts = [CardStats() for _ in range(3)]
    for i, part in enumerate(parts):
        _feed(part, batches[i * 4 : (i + 1) * 4])
    merged = CardStats().merge(parts[0]).merge(parts[1]).merge(parts[2])
    assert merged.to_dict() == one.to_dict()
    s = one.sources[PLAYS]
    assert s.chars_in.count == 1200 and s.chars_in.hist.sum() == 1200
    assert s.chars_out.count + s.removed["min_chars"] == 1200
    # The examples are the first removed documents in call order.
    first = [c for src, b in batches if src == PLAYS for c in b if c < 100][:3]
    assert [e["chars"] for e in s.examples["min_chars"]] == first


def test_with_an_order_merging_in_any_order_keeps_the_earliest_examples() -> None:
    a, b = CardStats(), CardStats()
    for order in range(10, 20):
        a.add_removed(PLAYS, "dedup", f"a{order}", "text", order=order)
    for order in range(0, 5):
        b.add_removed(PLAYS, "dedup", f"b{order}", "text", order=order)
    for merged in (CardStats().merge(a).merge(b), CardStats().merge(b).merge(a)):
        ex = merged.sources[PLAYS].examples["dedup"]
        assert [e["id"] for e in ex] == ["b0", "b1", "b2"]
        assert merged.sources[PLAYS].removed["dedup"] == 15


def test_memory_is_bounded_whatever_the_corpus() -> None:
    small, big = CardStats(), CardStats()
    _feed(small, _batches(n=2))
    rng = np.random.default_rng(1)
    for _ in range(50):
        chars = rng.integers(0, 3_000_000, 2000)
        big.add_input(PLAYS, chars, chars // 6)
        for i in range(200):
            big.add_removed(PLAYS, "min_words", f"{i:016x}", "word " * 1000)
    s = big.sources[PLAYS]
    assert all(h.shape == (len(EDGES),) for h in (s.chars_in.hist, s.words_in.hist))
    assert s.chars_in.hist.sum() == 100_000 and s.removed["min_words"] == 10_000
    assert len(s.examples["min_words"]) == 3
    assert {(len(e["text"]), e["chars"], e["truncated"]) for e in s.examples["min_words"]} == {
        (400, 5000, True)
    }
    # 100,000 documents take about as much room in dataset.json as 400.
    assert len(json.dumps(big.to_dict())) < 2 * len(json.dumps(small.to_dict()))


def test_bins_are_fixed_log_spaced_lengths() -> None:
    lengths = Lengths()
    lengths.add(np.array([0, 1, 7, 999, 1000, 5_000_000]))
    assert lengths.to_dict()["hist"] == {"0": 1, "1": 1, "6": 1, "794": 1, "1000": 1, "1000000": 1}
    assert EDGES[0] == 0 and EDGES[1] == 1 and EDGES[-1] == 1_000_000
    # One value at a time (the pure-Python path) bins exactly as a batch does (numpy's).
    values = np.random.default_rng(2).integers(0, 2_000_000, 500)
    one_by_one = Lengths()
    for v in values:
        one_by_one.add(np.array([v]))
    batch = Lengths()
    batch.add(values)
    assert one_by_one.to_dict() == batch.to_dict()
    assert np.all(np.diff(EDGES) > 0)
    same = Lengths()
    same.add(np.full(11, 1000))
    assert same.median() == pytest.approx((1000 * 1259) ** 0.5)  # middle of [1000, 1259)
    with pytest.raises(ValueError, match=">= 0"):
        lengths.add(np.array([-1]))
    with pytest.raises(ValueError, match="chars has 2 values, words 1"):
        CardStats().add_input(PLAYS, np.array([1, 2]), np.array([1]))


def test_to_dict_from_dict_round_trip_through_json() -> None:
    stats = CardStats()
    _feed(stats, _batches(n=4))
    stats.add_removed(DOCS, "dedup", "0123456789abcdef", "an excerpt", order=7, chars=9000)
    d = json.loads(json.dumps(stats.to_dict()))
    back = CardStats.from_dict(d)
    assert back.to_dict() == stats.to_dict()
    assert np.array_equal(back.sources[PLAYS].chars_in.hist, stats.sources[PLAYS].chars_in.hist)
    ex = back.sources[DOCS].examples["dedup"][0]
    assert (ex["chars"], ex["truncated"], ex["order"]) == (9000, True, 7)
    d["sources"][PLAYS]["chars_in"]["hist"]["7"] = 1  # 7 is not a bin edge
    with pytest.raises(ValueError, match="another version of cairn"):
        CardStats.from_dict(d)
    with pytest.raises(ValueError, match="format"):
        CardStats.from_dict({**d, "format": 99})


def _meta(stats: CardStats | None, mix: bool = True, decontam: bool = True) -> dict:
    meta = {
        "seq_len": 128,
        "vocab_size": 2048,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 1,
        "train_sequences": 70,
        "validation_sequences": 4,
        "train_tokens": 8960,
        "validation_tokens": 512,
        "sources": {
            PLAYS: {
                "documents_in": 1234,
                "documents_out": 1100,
                "removed": {"min_chars": 100, "dedup": 34},
                "tokens": 6543,
                "license": "Public domain",
                "digest": "a" * 64,
                "skipped": {"bad_json": 5},
                "pii": {"EMAIL": 2},
            },
            DOCS: {
                "documents_in": 800,
                "documents_out": 777,
                "removed": {"min_chars": 23, "dedup": 0},
                "tokens": 4321,
                "license": "PSF-2.0",
                "digest": "b" * 64,
            },
        },
        "filters": {"min_chars": 123, "dedup": 34},
        "config": {"seq_len": 128, "min_chars": 100},
    }
    if mix:
        meta["mix"] = {
            "target_tokens": 9600,
            "sources": {
                PLAYS: {
                    "weight": 0.25,
                    "share": 0.25,
                    "tokens_available": 6543,
                    "tokens_used": 2400,
                    "documents_used": 400,
                    "epochs": 0.3668,
                },
                DOCS: {
                    "weight": 0.75,
                    "share": 0.75,
                    "tokens_available": 4321,
                    "tokens_used": 7200,
                    "documents_used": 1300,
                    "epochs": 1.6663,
                },
            },
        }
    if decontam:
        meta["decontamination"] = {
            "ngram": 13,
            "action": "drop",
            "files": {"tasks/mc/test.jsonl": "c" * 64},
            "items": 40,
            "contaminated": {DOCS: 2},
            "examples": [{"doc_id": "feedfacefeedface", "source": DOCS, "items": ["mc/test:3"]}],
        }
    if stats is not None:
        meta["card"] = stats.to_dict()
    return meta


def _images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def test_write_card_writes_pngs_examples_and_a_card_with_the_numbers(tmp_path: Path) -> None:
    stats = CardStats()
    _feed(stats, _batches(n=4))
    stats.add_removed(PLAYS, "dedup", "0123456789abcdef", "To be ``` or not | to be <b>")
    written = write_card(tmp_path, _meta(stats))
    assert written == [
        "card/lengths.png",
        "card/tokens.png",
        "card/removed.png",
        "card/removed.jsonl",
        "DATA_CARD.md",
    ]
    for rel in written[:3]:
        data = (tmp_path / rel).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, rel
    rows = [json.loads(x) for x in (tmp_path / "card/removed.jsonl").read_text().splitlines()]
    assert {(r["source"], r["filter"]) for r in rows} == {
        (PLAYS, "min_chars"),
        (DOCS, "min_chars"),
        (PLAYS, "dedup"),
    }
    md = (tmp_path / "DATA_CARD.md").read_text()
    assert md.startswith("# Data card\n")
    # One row per filter, one column per source, then the total and its share of what was read.
    assert "| documents read | 1,234 | 800 | 2,034 |  |" in md
    assert "| skipped as malformed (bad_json) | 5 | 0 | 5 | 0.2% |" in md
    assert "| removed by `min_chars` | 100 | 23 | 123 | 6.0% |" in md
    assert "| **kept** | 1,100 | 777 | 1,877 | 92.3% |" in md
    assert "| tokens kept | 6,543 | 4,321 | 10,864 |  |" in md
    assert "| `./data/shakespeare/plays.jsonl` | Public domain | `aaaaaaaaaaaaaaaa…` |" in md
    assert "| `./data/python-docs` | PSF-2.0 |" in md
    # The mix: weights, tokens available vs used, epochs and what that means.
    assert "## Mix" in md and "Target: 9,600 tokens" in md
    assert "| `./data/python-docs` | 0.75 | 75.0% | 4,321 | 7,200 | 1,300 | 1.67 | up-sampled" in md
    assert "| 0.367 | down-sampled: 36.7% of its tokens used |" in md
    assert "## Decontamination" in md and "13-word n-grams of 40 benchmark items" in md
    assert "| `./data/python-docs` | 2 |" in md and "`feedfacefeedface`" in md
    assert "| `./data/shakespeare/plays.jsonl` | EMAIL | 2 |" in md
    # Removed examples in collapsible blocks, the text fenced so it cannot break out.
    assert "<details><summary>dedup: 1 of 1 from ./data/shakespeare/plays.jsonl</summary>" in md
    assert "````text\nTo be ``` or not | to be <b>\n````" in md
    assert "cut at 400 characters" in md
    assert "| training sequences / tokens | 70 / 8,960 |" in md
    assert '"min_chars": 100' in md and f"sha256 `{'a' * 64}`" in md
    assert sorted(_images(md)) == sorted(written[:3])  # every plot is embedded and exists


def test_no_decontamination_or_mix_section_when_absent_and_no_stale_plots(tmp_path: Path) -> None:
    stats = CardStats()
    _feed(stats, _batches(n=2))
    write_card(tmp_path, _meta(stats))
    assert (tmp_path / "card/lengths.png").exists()
    # A dataset.json without a card (or a mix, or decontamination) still gets a card, and no
    # plot from the earlier write survives.
    written = write_card(tmp_path, _meta(None, mix=False, decontam=False))
    assert written == ["card/tokens.png", "card/removed.png", "card/removed.jsonl", "DATA_CARD.md"]
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == [
        "removed.jsonl",
        "removed.png",
        "tokens.png",
    ]
    md = (tmp_path / "DATA_CARD.md").read_text()
    assert "Decontamination" not in md and "## Mix" not in md and "Removed examples" not in md
    assert "| **kept** | 1,100 | 777 | 1,877 | 92.3% |" in md
    assert sorted(_images(md)) == ["card/removed.png", "card/tokens.png"]


def test_a_source_without_a_licence_says_so(tmp_path: Path) -> None:
    meta = _meta(None, mix=False, decontam=False)
    meta["sources"][DOCS]["license"] = None
    write_card(tmp_path, meta)
    md = (tmp_path / "DATA_CARD.md").read_text()
    assert "| `./data/python-docs` | not declared: check before redistributing |" in md
