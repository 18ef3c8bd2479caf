"""Generate the shipped chat data (sft.jsonl, dpo.jsonl) from the shipped Shakespeare plays.

The post-training stages need chat and preference data that lives in the repository (no network,
free to redistribute) and that a tiny model pretrained on the same plays can visibly learn from.
Questions about the plays' own lines fit: "which play is this line from?", "who says it?",
"continue the line". The answers come from the text itself, so they are right by construction.

    python workflows/data/chat/make_chat.py          # rewrites sft.jsonl and dpo.jsonl here

The output is byte-for-byte reproducible: plays and lines are read in file order and every
choice comes from one seeded `random.Random`. sft and dpo use disjoint lines.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAYS = HERE.parent / "shakespeare" / "plays.jsonl"
SEED = 2026

# A speech heading on the first line of a block: "HAMLET.", "FIRST WITCH.", "THESEUS", but
# also "Ham." or "Sampson." in plays whose edition abbreviates or does not capitalise names.
HEADING = re.compile(r"[A-Za-z][A-Za-z' ]{0,30}\.?")
BLOCK = re.compile(r"\n[ \t]*\n")
SYSTEM = "You answer questions about Shakespeare's plays in a few words."

# Rows per play (13 plays): sft 13 * (12 + 8 + 6 + 3) = 377, dpo 13 * (10 + 8 + 4) = 286.
SFT_PLAY, SFT_CONTINUE, SFT_SPEAKER, SFT_TWO_TURNS = 12, 8, 6, 3
DPO_PLAY, DPO_CONTINUE, DPO_SPEAKER = 10, 8, 4


@dataclass(frozen=True)
class Line:
    play: str
    speaker: str | None  # as a reader writes it ("Lady Macbeth"); None where names are abbreviated
    text: str


def read_lines(path: Path) -> dict[str, list[Line]]:
    """Every usable line of every play's speeches, in order, with who speaks it.

    A speech is a block of lines after a blank line whose first line is the speaker's name.
    Usable lines have 6 to 12 words, no stage direction, no quotation marks (the prompts quote the
    line) and no dashes (which mark a broken-off line). Only all-capital headings ("LADY
    MACBETH.") are taken as names: some editions abbreviate them ("Ham."), which would make
    wrong answers to "who says".
    """
    plays: dict[str, list[Line]] = {}
    with path.open() as f:
        for raw in f:
            scene = json.loads(raw)
            if scene["act"] == 0:  # front matter: title and list of persons
                continue
            lines = plays.setdefault(scene["play"], [])
            body = scene["text"].split("\n", 1)[1]  # after the scene heading
            for block in BLOCK.split(body):
                rows = [r.strip() for r in block.strip().split("\n")]
                heading = rows[0]
                if len(rows) < 2 or not HEADING.fullmatch(heading) or len(heading.split()) > 4:
                    continue  # a stage direction, or text that is not a speech
                name = heading.rstrip(".")
                speaker = " ".join(w.capitalize() for w in name.split()) if name.isupper() else None
                if speaker == "All":
                    speaker = None
                in_direction = False
                for text in rows[1:]:
                    if text.startswith("[") or in_direction:
                        in_direction = "]" not in text
                        continue
                    words = text.split()
                    if (
                        6 <= len(words) <= 12
                        and not any(c in text for c in '"[]')
                        and "--" not in text
                        and text[0].isupper()
                    ):
                        lines.append(Line(scene["play"], speaker, text))
    return plays


def ask_play(line: Line) -> str:
    return f'Which play is this line from: "{line.text}"'


def ask_speaker(line: Line) -> str:
    return f'In {line.play}, who says: "{line.text}"'


def split_line(line: Line) -> tuple[str, str]:
    words = line.text.split()
    cut = len(words) // 2
    return " ".join(words[:cut]), " ".join(words[cut:])


def ask_continue(start: str) -> str:
    return f'Continue the line: "{start} ..."'


def sft_rows(pool: dict[str, list[Line]], rng: random.Random) -> list[dict]:
    rows: list[dict] = []
    for lines in pool.values():
        named = _take(lines, SFT_SPEAKER + SFT_TWO_TURNS, named=True)
        # Plays whose edition abbreviates names ask which play instead of who speaks.
        extra = SFT_SPEAKER + SFT_TWO_TURNS - len(named)
        for line in _take(lines, SFT_PLAY + extra):
            rows.append(_chat(rng, ask_play(line), f"{line.play}."))
        for line in _take(lines, SFT_CONTINUE):
            start, rest = split_line(line)
            rows.append(_chat(rng, ask_continue(start), rest))
        for line in named[:SFT_SPEAKER]:
            rows.append(_chat(rng, ask_speaker(line), f"{line.speaker}."))
        for line in named[SFT_SPEAKER:]:
            messages = [
                {"role": "user", "content": ask_play(line)},
                {"role": "assistant", "content": f"{line.play}."},
                {"role": "user", "content": "Who says it?"},
                {"role": "assistant", "content": f"{line.speaker}."},
            ]
            rows.append({"messages": messages})
    rng.shuffle(rows)
    return rows


def dpo_rows(pool: dict[str, list[Line]], rng: random.Random) -> list[dict]:
    names = sorted(pool)
    rows: list[dict] = []
    for play, lines in pool.items():
        speakers = sorted({x.speaker for x in lines if x.speaker})
        named = _take(lines, DPO_SPEAKER, named=True)
        for line in _take(lines, DPO_PLAY + DPO_SPEAKER - len(named)):
            wrong = rng.choice([p for p in names if p != play])
            rows.append(_pair(ask_play(line), f"{play}.", f"{wrong}."))
        for line in _take(lines, DPO_CONTINUE):
            start, rest = split_line(line)
            other = rest
            while other == rest:  # the end of a line from another play
                other = split_line(rng.choice(pool[rng.choice([p for p in names if p != play])]))[1]
            rows.append(_pair(ask_continue(start), rest, other))
        for line in named:
            wrong = rng.choice([x for x in speakers if x != line.speaker])
            rows.append(_pair(ask_speaker(line), f"{line.speaker}.", f"{wrong}."))
    rng.shuffle(rows)
    return rows


def _take(lines: list[Line], n: int, named: bool = False) -> list[Line]:
    """The next `n` lines of a play's shuffled pool (with a known speaker, if `named`), removed
    from the pool so that no line is used twice."""
    taken = [x for x in lines if x.speaker or not named][:n]
    for x in taken:
        lines.remove(x)
    return taken


def _chat(rng: random.Random, question: str, answer: str) -> dict:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    if rng.random() < 0.25:  # some rows carry a system turn, as real chat data does
        messages.insert(0, {"role": "system", "content": SYSTEM})
    return {"messages": messages}


def _pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def write(rows: list[dict], path: Path) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in rows))
    print(f"{path}: {len(rows)} rows, {path.stat().st_size:,} bytes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plays", type=Path, default=PLAYS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rng = random.Random(SEED)
    plays = read_lines(args.plays)
    pool = {play: rng.sample(lines, len(lines)) for play, lines in sorted(plays.items())}
    write(sft_rows(pool, rng), args.out / "sft.jsonl")
    write(dpo_rows(pool, rng), args.out / "dpo.jsonl")


if __name__ == "__main__":
    main()
