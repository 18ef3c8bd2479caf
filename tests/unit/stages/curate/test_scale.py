"""Tests of curation at scale: ids traced from a training token back to its document, near and
exact duplicate clusters, decontamination, mixing by weight, malformed input counted, the card.

Each runs the real curate stage (Ray Data in the session's local Ray) on generated documents
with known answers.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from cairn.errors import StageError
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.curate import SPEC, CurateConfig, pack, sources
from cairn.stages.curate.text import normalise
from cairn.testing import local_context
from tests import REPO

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_local")]


SMALL = dict(vocab_size=300, seq_len=16)
WORDS = [
    "river",
    "stone",
    "lantern",
    "harbour",
    "meadow",
    "winter",
    "orchard",
    "candle",
    "thunder",
    "willow",
    "sparrow",
    "copper",
    "basket",
    "marble",
    "feather",
    "compass",
    "ribbon",
    "cellar",
    "garden",
    "window",
    "ladder",
    "kettle",
    "blanket",
    "pepper",
    "mirror",
    "saddle",
    "violin",
    "anchor",
    "pillow",
    "hammer",
    "bottle",
    "carpet",
    "timber",
    "needle",
    "wagon",
    "barrel",
]


def prose(n_docs: int, words: int = 60, seed: int = 0) -> list[str]:
    """Distinct documents of random words: no two are near-duplicates of each other."""
    rng = random.Random(seed)
    return [
        f"Entry {i}. " + " ".join(rng.choice(WORDS) for _ in range(words)) + "."
        for i in range(n_docs)
    ]


def edit(text: str, share: float, seed: int) -> str:
    """A near-copy: `share` of the words replaced."""
    rng = random.Random(seed)
    words = text.split()
    for j in rng.sample(range(len(words)), max(1, int(share * len(words)))):
        words[j] = rng.choice(WORDS).upper()
    return " ".join(words)


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def source(path: Path, name: str | None = None, digest: str = "ab" * 32) -> InputArtifact:
    return InputArtifact(path=path, type=ArtifactType.RAW, digest=digest, name=name or path.name)


def curate(root: Path, inputs: dict, **config):
    ctx = local_context(root)
    meta = SPEC.run(CurateConfig(**{**SMALL, **config}), inputs, ctx)["dataset"]
    ctx.flush()
    return meta, ctx.outputs_root / "dataset"


def documents(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]


def test_a_training_token_traces_back_to_its_document_by_stable_id(tmp_path):
    texts = prose(80)
    path = write_jsonl(tmp_path / "d" / "docs.jsonl", texts)
    meta, out = curate(tmp_path / "run", {"sources": [source(path, "docs")]}, shard_sequences=7)
    docs = documents(out)
    # Every id is the one `sources.doc_id` gives the record: source digest, file, position.
    by_id = {sources.doc_id("ab" * 32, "docs.jsonl", i): normalise(t) for i, t in enumerate(texts)}
    assert {d["id"] for d in docs} <= set(by_id)
    tok = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    shards = [np.load(p) for p in sorted((out / "train").glob("shard-*.npy"))]
    rows = np.concatenate(shards)
    rng = np.random.default_rng(0)
    eos = meta["eos_token_id"]
    for _ in range(25):
        row, col = int(rng.integers(len(rows))), int(rng.integers(meta["seq_len"]))
        if rows[row, col] == eos:
            continue
        doc = docs[pack.trace(out / "train", row, col, meta["seq_len"])]
        assert doc["split"] == "train"
        # The token's text, with its neighbours in the same row up to an EOS, is in that document.
        line = rows[row].tolist()
        lo = max((i + 1 for i in range(col) if line[i] == eos), default=0)
        hi = min((i for i in range(col, len(line)) if line[i] == eos), default=len(line))
        assert tok.decode(line[lo:hi]).strip() in by_id[doc["id"]]


def test_exact_and_near_duplicate_clusters_keep_the_first_copy(tmp_path):
    texts = prose(40, words=80)
    rows = texts + [
        texts[3],  # exact copy → dedup
        "  " + texts[5].replace(" ", "  "),  # exact after normalising → dedup
        edit(texts[7], 0.03, 1),  # 3% of words edited → fuzzy_dedup
        edit(texts[7], 0.03, 2),  # another near-copy of the same: same cluster
        edit(texts[9], 0.6, 3),  # 60% edited: a different document, kept
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    meta, out = curate(tmp_path / "run", {"sources": [source(path)]})
    assert meta["filters"]["dedup"] == 2
    assert meta["filters"]["fuzzy_dedup"] == 2
    kept = {d["id"] for d in documents(out)}
    ids = [sources.doc_id("ab" * 32, "d.jsonl", i) for i in range(len(rows))]
    assert {ids[3], ids[5], ids[7], ids[9], ids[44]} <= kept  # originals and the far edit
    assert not {ids[40], ids[41], ids[42], ids[43]} & kept  # the copies
    examples = [json.loads(x) for x in (out / "card" / "removed.jsonl").read_text().splitlines()]
    assert {e["filter"] for e in examples} >= {"dedup", "fuzzy_dedup"}


def test_a_planted_eval_item_is_removed_or_flagged(tmp_path):
    suite = REPO / "workflows" / "evals" / "shakespeare"
    item = json.loads((suite / "heldout.jsonl").read_text().splitlines()[0])
    planted = "A note before the quote. " + " ".join(str(v) for v in item.values()) + " The end."
    texts = [*prose(50), planted]
    path = write_jsonl(tmp_path / "d.jsonl", texts)
    inputs = {"sources": [source(path)], "eval_tasks": [source(suite, "./evals/shakespeare")]}
    meta, out = curate(tmp_path / "remove", inputs)
    report = meta["decontamination"]
    assert report["documents"] == 1 and report["contaminated"] == {"d.jsonl": 1}
    assert meta["filters"]["decontamination"] == 1
    assert set(report["files"]) >= {"./evals/shakespeare/heldout.jsonl"}
    (line,) = (out / "decontamination.jsonl").read_text().splitlines()
    flagged = json.loads(line)
    assert flagged["action"] == "remove" and flagged["items"][0].startswith(
        "./evals/shakespeare/heldout.jsonl:"
    )
    assert flagged["doc_id"] not in {d["id"] for d in documents(out)}

    meta, out = curate(tmp_path / "flag", inputs, decontaminate={"action": "flag"})
    assert "decontamination" not in meta["filters"]
    assert meta["decontamination"]["documents"] == 1
    assert json.loads((out / "decontamination.jsonl").read_text())["action"] == "flag"
    assert json.loads((out / "decontamination.jsonl").read_text())["doc_id"] in {
        d["id"] for d in documents(out)
    }


def test_weights_mix_sources_to_their_share_of_the_target(tmp_path):
    a = write_jsonl(tmp_path / "a" / "big.jsonl", prose(120, seed=1))
    b = write_jsonl(tmp_path / "b" / "small.jsonl", prose(30, seed=2))
    inputs = {"sources": [source(a, "./data/big.jsonl"), source(b, "./data/small.jsonl")]}
    natural, _ = curate(tmp_path / "natural", inputs)
    have = {k: v["tokens_available"] for k, v in natural["mix"]["sources"].items()}
    assert all(v["epochs"] == 1.0 for v in natural["mix"]["sources"].values())
    target = sum(have.values())
    meta, out = curate(
        tmp_path / "mixed",
        inputs,
        sources={"big": {"weight": 1, "license": "CC0"}, "small.jsonl": {"weight": 1}},
        target_tokens=target,
    )
    mixed = meta["mix"]["sources"]
    big, small = mixed["./data/big.jsonl"], mixed["./data/small.jsonl"]
    # Half the target each, to within one document's tokens.
    longest = max(d["tokens"] for d in documents(out))
    assert abs(big["tokens_used"] - target / 2) <= longest
    assert abs(small["tokens_used"] - target / 2) <= longest
    assert big["epochs"] < 1 < small["epochs"]  # down-sampled, up-sampled
    assert meta["sources"]["./data/big.jsonl"]["license"] == "CC0"
    docs = documents(out)
    uses = {d["source"]: 0 for d in docs}
    for d in docs:
        if d["split"] == "train":
            uses[d["source"]] = max(uses[d["source"]], d["uses"])
    assert uses["./data/small.jsonl"] >= 2 and uses["./data/big.jsonl"] == 1
    # The packed stream holds what the mix says: its tokens are the used tokens, less the tail.
    used = big["tokens_used"] + small["tokens_used"]
    assert used - meta["seq_len"] < meta["train_tokens"] <= used
    assert "## Mix" in (out / "DATA_CARD.md").read_text()


def test_a_weight_for_an_unknown_source_names_the_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", prose(20))
    with pytest.raises(StageError, match=r"sources\.nope matches no source.*a\.jsonl"):
        curate(tmp_path / "run", {"sources": [source(a)]}, sources={"nope": {"weight": 1}})


def test_malformed_records_are_counted_when_skipping(tmp_path):
    folder = tmp_path / "mixed"
    good = prose(30)
    write_jsonl(folder / "good.jsonl", good)
    (folder / "bad.jsonl").write_text(
        json.dumps({"text": good[0] + " again"})
        + "\n"
        + '{"text": "broken\n'
        + json.dumps({"body": "no text field"})
        + "\n"
        + json.dumps({"text": 7})
        + "\n"
    )
    with gzip.open(folder / "cut.jsonl.gz", "wb") as f:
        f.write(b"".join(json.dumps({"text": t}).encode() + b"\n" for t in prose(10, seed=5)))
    data = (folder / "cut.jsonl.gz").read_bytes()
    (folder / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])  # a truncated download
    with pytest.raises(StageError, match=r"bad\.jsonl:2: not valid JSON"):
        curate(tmp_path / "strict", {"sources": [source(folder, "web")]})
    meta, out = curate(
        tmp_path / "lenient", {"sources": [source(folder, "web")]}, on_malformed="skip"
    )
    skipped = meta["sources"]["web"]["skipped"]
    assert skipped == {"invalid_json": 1, "missing_field": 1, "not_a_string": 1, "corrupt_file": 1}
    card = (out / "DATA_CARD.md").read_text()
    assert "skipped as malformed (corrupt_file)" in card


def test_every_file_of_a_folder_source_is_its_own_place_in_the_stream(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    texts = prose(6, words=40)
    for i, t in enumerate(texts):
        (folder / f"note-{i}.txt").write_text(t)
    meta, out = curate(tmp_path / "run", {"sources": [source(folder, "notes")]})
    docs = documents(out)
    assert sorted(d["source"] for d in docs) == [f"notes/note-{i}.txt" for i in range(6)]
    ids = {sources.doc_id("ab" * 32, f"note-{i}.txt", 0) for i in range(6)}
    assert {d["id"] for d in docs} == ids
    assert meta["sources"]["notes"]["documents_out"] == 6 and meta["train_tokens"] > 0
