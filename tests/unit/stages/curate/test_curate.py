"""Tests of the `curate` stage kind: reading, cleaning, tokenizing, packing, errors, the corpus.

Each test runs the real stage through `local_context` on a few kilobytes of generated text (a
tokenizer of ~300 tokens trains in milliseconds); its scan and dedup passes run on Ray Data in
the session's local Ray. The last ones curate the shipped corpora end to end.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from tokenizers import Tokenizer

from cairn.errors import StageError, StepCancelled
from cairn.stage import ArtifactType, InputArtifact
from cairn.stages.curate import SPEC, CurateConfig
from cairn.stages.curate.text import normalise
from cairn.testing import local_context
from tests import REPO

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_local")]


CORPUS = REPO / "workflows" / "data" / "shakespeare"
SMALL = dict(vocab_size=300, seq_len=16)  # small enough that a few documents fill sequences


def sentences(n_docs: int, seed: int = 0) -> list[str]:
    """Distinct English-ish documents of a few sentences each."""
    rng = random.Random(seed)
    who = ["the king", "a fool", "the queen", "my lord", "the ghost", "a soldier", "the nurse"]
    does = ["speaks to", "waits for", "laughs at", "follows", "forgives", "betrays", "fears"]
    return [
        f"Doc {i}: "
        + " ".join(
            f"{rng.choice(who).capitalize()} {rng.choice(does)} {rng.choice(who)}."
            for _ in range(rng.randint(3, 8))
        )
        for i in range(n_docs)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def source(path: Path, name: str | None = None, digest: str = "0" * 64) -> InputArtifact:
    return InputArtifact(path=path, type=ArtifactType.RAW, digest=digest, name=name or path.name)


def curate(root: Path, sources: list[InputArtifact], **config):
    """Run the stage; returns (metadata, output dir, reported records)."""
    ctx = local_context(root)
    result = SPEC.run(CurateConfig(**{**SMALL, **config}), {"sources": sources}, ctx)
    ctx.flush()
    return result["dataset"], ctx.outputs_root / "dataset", ctx.reporter.drain()


def shards(out: Path, split: str) -> list[np.ndarray]:
    return [np.load(p) for p in sorted((out / split).glob("shard-*.npy"))]


def documents(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "documents.jsonl").read_text().splitlines()]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data" / "docs.jsonl", [{"text": t} for t in sentences(60)])


# --- cleaning -----------------------------------------------------------------------------------


def test_normalise_applies_nfc_collapses_whitespace_and_strips():
    assert normalise("  Cafe\u0301\t au\n\n  lait \u00a0 ") == "Caf\u00e9 au lait"
    assert normalise("\n\t ") == ""


def test_length_filters_count_what_they_remove(tmp_path, corpus):
    extra = [
        {"text": "   Too short.  "},  # 10 chars after strip: below min_chars
        {"text": "word " * 200},  # 999 chars: above max_chars
        {"text": "Honorificabilitudinitatibus"},  # long enough, but one word: below min_words
    ]
    path = write_jsonl(tmp_path / "more" / "extra.jsonl", extra)
    meta, out, _ = curate(
        tmp_path / "run",
        [source(corpus, "docs"), source(path, "extra")],
        min_chars=12,
        max_chars=500,
        min_words=2,
    )
    assert meta["filters"] == {
        "min_chars": 1,
        "max_chars": 1,
        "min_words": 1,
        "dedup": 0,
        "fuzzy_dedup": 0,
    }
    assert meta["sources"]["extra"]["documents_in"] == 3
    assert meta["sources"]["extra"]["documents_out"] == 0
    assert meta["sources"]["docs"]["documents_out"] == 60
    assert [d["source"] for d in documents(out)].count("extra") == 0
    assert len(documents(out)) == 60


def test_exact_dedup_removes_a_copy_that_differs_only_in_whitespace(tmp_path):
    texts = sentences(40)
    rows = [{"text": t} for t in texts] + [{"text": "\n  " + texts[3].replace(" ", " \t ")}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    meta, out, _ = curate(tmp_path / "a", [source(path)])
    assert meta["filters"]["dedup"] == 1
    assert meta["sources"]["d.jsonl"]["documents_out"] == 40
    kept, _, _ = curate(tmp_path / "b", [source(path)], dedup=False, fuzzy_dedup=None)
    assert "dedup" not in kept["filters"]
    assert kept["sources"]["d.jsonl"]["documents_out"] == 41


def test_dedup_sees_composed_and_decomposed_accents_as_one_text(tmp_path):
    rows = [{"text": t} for t in sentences(30)]
    rows += [{"text": "The caf\u00e9 is closed."}, {"text": "The cafe\u0301 is closed."}]
    meta, _, _ = curate(tmp_path / "a", [source(write_jsonl(tmp_path / "d.jsonl", rows))])
    assert meta["filters"]["dedup"] == 1


# --- tokenizer, packing, layout -----------------------------------------------------------------


def test_shards_are_int32_rows_of_seq_len_that_decode_to_the_documents(tmp_path, corpus):
    # val_fraction 0.2: enough validation documents that some end inside the packed rows.
    meta, out, _ = curate(tmp_path / "run", [source(corpus)], shard_sequences=50, val_fraction=0.2)
    tok = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    eos = meta["eos_token_id"]
    texts = {normalise(t) for t in sentences(60)}
    for split in ("train", "validation"):
        arrays = shards(out, split)
        assert arrays, f"no {split} shards"
        assert all(a.dtype == np.int32 and a.ndim == 2 and a.shape[1] == 16 for a in arrays)
        assert all(len(a) <= 50 for a in arrays)
        assert sum(len(a) for a in arrays) == meta[f"{split}_sequences"]
        assert meta[f"{split}_tokens"] == meta[f"{split}_sequences"] * 16
        stream = np.concatenate(arrays).ravel()
        # Every document ends with EOS, and the text between two EOS is exactly one document
        # (the last piece is a document cut off by the dropped tail).
        pieces = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]
        assert pieces and all(p[-1] == eos and (p[:-1] != eos).all() for p in pieces)
        decoded = [tok.decode(p[:-1].tolist()) for p in pieces]
        assert set(decoded) <= texts
        assert len(set(decoded)) == len(decoded)
    assert len(shards(out, "train")) == -(-meta["train_sequences"] // 50)


def test_tokenizer_loads_with_autotokenizer_and_round_trips(tmp_path, corpus):
    from transformers import AutoTokenizer

    meta, out, _ = curate(tmp_path / "run", [source(corpus)])
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert tok.pad_token == "<|pad|>"
    assert (tok.eos_token_id, tok.pad_token_id) == (meta["eos_token_id"], meta["pad_token_id"])
    assert len(tok) == meta["vocab_size"] == 300
    text = "The ghost forgives my lord; naïve ✓ bytes"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_dataset_json_and_documents_jsonl_record_what_was_made(tmp_path, corpus):
    meta, out, _ = curate(tmp_path / "run", [source(corpus, "docs", digest="ab" * 32)])
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk.pop("config") == CurateConfig(**SMALL).identity()
    assert on_disk == meta
    docs = documents(out)
    assert len(docs) == meta["sources"]["docs"]["documents_out"] == 60
    first_id = hashlib.sha256(("ab" * 32 + ":docs.jsonl:0").encode()).hexdigest()[:16]
    assert docs[0]["id"] == first_id and docs[0]["source"] == "docs"
    assert len({d["id"] for d in docs}) == 60
    assert sum(d["tokens"] for d in docs) == meta["sources"]["docs"]["tokens"]
    assert docs[0]["chars"] == len(normalise(sentences(60)[0]))
    splits = [d["split"] for d in docs]
    assert 0 < splits.count("validation") < splits.count("train")


def test_two_runs_write_identical_files(tmp_path, corpus):
    _, first, _ = curate(tmp_path / "a", [source(corpus)], seed=3)
    _, second, _ = curate(tmp_path / "b", [source(corpus)], seed=3)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    _, other_seed, _ = curate(tmp_path / "c", [source(corpus)], seed=4)
    assert (first / "train/shard-00000.npy").read_bytes() != (
        other_seed / "train/shard-00000.npy"
    ).read_bytes()
    assert documents(first) == documents(other_seed)  # the seed orders packing, not the split


def test_split_follows_content_not_position(tmp_path):
    texts = sentences(60)
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in reversed(texts)])
    _, out_a, _ = curate(tmp_path / "ra", [source(a)])
    _, out_b, _ = curate(tmp_path / "rb", [source(b)])
    split_a = [d["split"] for d in documents(out_a)]
    split_b = [d["split"] for d in documents(out_b)]
    assert split_a == split_b[::-1]


def test_a_tiny_corpus_still_gets_a_validation_document(tmp_path):
    rows = [{"text": t * 3} for t in sentences(4)]
    meta, out, _ = curate(tmp_path / "run", [source(write_jsonl(tmp_path / "d.jsonl", rows))])
    assert [d["split"] for d in documents(out)].count("validation") == 1
    assert meta["validation_sequences"] >= 1


def test_text_files_are_documents_or_paragraphs_and_gzip_is_read(tmp_path):
    data = tmp_path / "data"
    (data / "notes").mkdir(parents=True)
    paragraphs = sentences(12)
    (data / "notes" / "a.txt").write_text("\n\n".join(paragraphs[:6]) + "\n")
    (data / "notes" / "b.md").write_text("\r\n  \r\n".join(paragraphs[6:10]))
    with gzip.open(data / "c.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"body": t}) + "\n" for t in paragraphs[10:])
    (data / "README").write_text("not data")
    (data / ".hidden.txt").write_text("not data either")

    meta, out, records = curate(tmp_path / "one", [source(data, "d")], text_field="body")
    assert meta["sources"]["d"]["documents_in"] == 4  # a.txt, b.md, 2 lines of c.jsonl.gz
    assert [d["source"] for d in documents(out)] == ["d/c.jsonl.gz"] * 2 + [
        "d/notes/a.txt",
        "d/notes/b.md",
    ]
    assert any("skipped 1 unsupported" in r.get("message", "") for r in records)

    meta, out, _ = curate(
        tmp_path / "para", [source(data, "d")], text_field="body", split_text_files="paragraph"
    )
    assert meta["sources"]["d"]["documents_in"] == 12
    per_file = [d["source"] for d in documents(out)]
    assert per_file.count("d/notes/a.txt") == 6 and per_file.count("d/notes/b.md") == 4


def test_reports_progress_logs_and_metrics(tmp_path, corpus):
    meta, _, records = curate(tmp_path / "run", [source(corpus)])
    kinds = [r["type"] for r in records]
    assert kinds.count("log") >= 5
    progress = [r for r in records if r["type"] == "progress"]
    assert progress[0]["done"] == 0 and progress[-1]["done"] == progress[-1]["total"]
    metrics = [r for r in records if r["type"] == "metrics"][-1]["values"]
    assert metrics["documents_in"] == 60
    assert metrics["train_sequences"] == meta["train_sequences"]


def test_a_cancelled_step_stops(tmp_path, corpus):
    ctx = local_context(tmp_path)
    ctx.reporter.cancel()
    with pytest.raises(StepCancelled):
        SPEC.run(CurateConfig(**SMALL), {"sources": [source(corpus)]}, ctx)


# --- errors a user can fix ----------------------------------------------------------------------


def test_a_broken_json_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken" "oops"}\n')
    with pytest.raises(StageError, match=r"x\.jsonl:3: not valid JSON .*fix the line"):
        curate(tmp_path / "run", [source(path)])


def test_a_missing_text_field_names_the_field_and_the_option(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "a b c"}, {"body": "a b c"}])
    with pytest.raises(StageError, match=r"x\.jsonl:2: no field 'text'.*'body'.*text_field"):
        curate(tmp_path / "run", [source(path)])


def test_a_non_string_text_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": 17}])
    with pytest.raises(StageError, match=r"x\.jsonl:1: field 'text' is 17 \(int\)"):
        curate(tmp_path / "run", [source(path)])


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(StageError, match=r"x\.txt:3: not valid UTF-8"):
        curate(tmp_path / "run", [source(path)])


@pytest.mark.parametrize("kind", ["empty file", "empty directory", "only unsupported files"])
def test_a_source_without_documents_is_named(tmp_path, corpus, kind):
    empty = tmp_path / "empty"
    if kind == "empty file":
        empty = tmp_path / "empty.jsonl"
        empty.write_text("\n\n")
    else:
        empty.mkdir()
        if kind == "only unsupported files":
            (empty / "data.csv").write_text("text\nhello\n")
    with pytest.raises(StageError, match=r"^(empty|empty\.jsonl): no documents"):
        curate(tmp_path / "run", [source(corpus), source(empty)])


def test_everything_filtered_out_says_which_filter_and_field(tmp_path, corpus):
    with pytest.raises(
        StageError, match=r"all 60 documents.*min_chars removed 60.*relax min_chars"
    ):
        curate(tmp_path / "run", [source(corpus)], min_chars=100_000)


def test_too_little_validation_text_says_what_to_change(tmp_path, corpus):
    with pytest.raises(StageError, match=r"validation split has \d+ tokens.*raise val_fraction"):
        curate(tmp_path / "run", [source(corpus)], seq_len=4096)


def test_config_bounds():
    for bad in (
        {"vocab_size": 259},
        {"seq_len": 4},
        {"val_fraction": 0.5},
        {"val_fraction": 0},
        {"min_chars": 10, "max_chars": 5},
        {"split_text_files": "line"},
        {"text_feld": "body"},
    ):
        with pytest.raises(ValidationError):
            CurateConfig(**bad)
    assert CurateConfig().identity()["shard_sequences"] == 4096


# --- the shipped corpus -------------------------------------------------------------------------


def test_curates_the_shipped_shakespeare_corpus(tmp_path):
    meta, out, _ = curate(
        tmp_path / "run",
        [source(CORPUS / "plays.jsonl", "plays"), source(CORPUS / "poems", "poems")],
        vocab_size=2048,
        seq_len=128,
    )
    plays, poems = meta["sources"]["plays"], meta["sources"]["poems"]
    assert plays["documents_in"] == plays["documents_out"] == 249  # 13 plays, one per scene
    assert poems["documents_in"] == poems["documents_out"] == 5
    assert meta["vocab_size"] == 2048
    # ~1.9 MB of text at ~3.3 bytes per token: about 580k tokens.
    assert 500_000 < plays["tokens"] + poems["tokens"] < 700_000
    assert meta["train_sequences"] > 3500 and meta["validation_sequences"] > 100
    docs = documents(out)
    assert {d["source"] for d in docs} >= {"plays", "poems/sonnets.txt"}


def test_quality_rules_and_pii_scrubbing_are_counted_per_source(tmp_path, corpus):
    prose = (
        "The ship left the harbour at dawn, and the crew stood silent on the deck while the "
        "captain read the orders aloud. Nobody asked where they were going; it was enough to "
        "know that the voyage would be long and that the sea would be cold. Write to "
        "ishmael@pequod.example or call +1 415 555 0100 with news of the whale."
    )
    menu = "\n".join(f"- item {i}" for i in range(60))  # a list of bullets, no sentences
    rows = [{"text": f"Log {i}. {prose}"} for i in range(6)] + [{"text": menu}]
    path = write_jsonl(tmp_path / "web" / "web.jsonl", rows)
    # The six log entries differ in one word: near-duplicates, so fuzzy dedup stays off here.
    meta, out, _ = curate(
        tmp_path / "run",
        [source(corpus, "docs"), source(path, "web")],
        quality={},
        pii=True,
        fuzzy_dedup=None,
    )
    web = meta["sources"]["web"]
    assert web["documents_in"] == 7 and web["documents_out"] == 6
    removed = {k: v for k, v in web["removed"].items() if v}
    assert len(removed) == 1 and next(iter(removed)).startswith("gopher_")
    assert web["pii"] == {"email": 6, "phone": 6}
    # The generated corpus is short, stop-word-poor "Doc N:" lines: the word-count rule
    # (50 words at least) decides, and is counted against that source only.
    assert meta["sources"]["docs"]["removed"]["gopher_word_count"] > 0
    assert meta["filters"]["dedup"] == 0 and list(meta["filters"])[-1] == "dedup"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    kept_text = "".join(
        tok.decode(row) for s in shards(out, "train") + shards(out, "validation") for row in s
    )
    assert "<EMAIL>" in kept_text and "ishmael@pequod" not in kept_text


def test_default_config_applies_no_quality_rules_and_records_no_pii(tmp_path, corpus):
    meta, _, _ = curate(tmp_path / "run", [source(corpus, "docs")])
    assert list(meta["filters"]) == ["min_chars", "max_chars", "min_words", "dedup", "fuzzy_dedup"]
    assert "pii" not in meta["sources"]["docs"]
