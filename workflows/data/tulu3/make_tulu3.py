"""Generate the tiny Tülu-3-style data of `workflows/tulu3.yaml`: pretraining text, SFT chats, DPO
pairs, RLVR prompts with verifiable ground truths, and a held-out lm-eval task.

RLVR learns only where the policy's rewards differ within a group of completions, so the task
must be one that a 2-layer, 128-wide model pretrained for a minute on 2 CPU cores can *partly*
solve after SFT. Word problems on single-digit addition and its inverse fit: 81 sums of 1-9 and
1-9, 90 differences such as 13 - 5 = 8, answers 0-18, one answer form ("3 + 4 = 7. The answer is
7."), and wording varied by names, objects and templates, so that the model must read the numbers
and the verb rather than memorise sentences. A fifth or so of the chats and prompts are
instruction following with constraints that open-instruct's IFEval checks can verify (a keyword,
a forbidden word, a word limit, two paragraphs split by `* * *`, JSON).

The held-out evaluation problems use names and objects that no training problem contains, and
every one of them is checked to share no run of 8 words with any training text (curate's
decontamination window), so the eval measures the skill, not a memorised question.

    python workflows/data/tulu3/make_tulu3.py     # rewrites the files here and in evals/tulu3/

The output is byte-for-byte reproducible: every choice comes from one seeded `random.Random`,
drawn in a fixed order. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EVALS = HERE.parent.parent / "evals" / "tulu3"
SEED = 16

CORPUS_DOCS, SFT_ROWS, DPO_ROWS, RLVR_ROWS, EVAL_ROWS = 3000, 600, 300, 480, 150
IF_SHARE = {"sft": 0.2, "dpo": 0.2, "rlvr": 0.25}  # instruction-following share per file
DECONTAM_NGRAM = 8  # curate's default window

NAMES = (
    "Mia Leo Ava Sam Zoe Max Lily Ben Emma Noah Ella Jack Ruby Omar Lucy Finn Nora Eli Anna "
    "Theo Ivy Adam Maya Owen Rosa Hugo Lena Ravi Sara Tom"
).split()
OBJECTS = (
    "pens apples books marbles stickers cards shells coins stamps cookies balloons pencils toys "
    "flowers eggs buttons rocks candles cups hats bottles crayons oranges"
).split()
# Only the held-out eval problems use these; in training they occur only in "What does Priya
# like? Priya likes kites." items of the corpus, never in a problem.
EVAL_NAMES = "Priya Felix Greta Kofi Selma Dmitri Yuki Paolo Ingrid Tariq Wanda Bruno".split()
EVAL_OBJECTS = "beads kites plums feathers ribbons spoons tickets acorns".split()

# {n}/{m}: names, {a}/{b}: the numbers, {o}: the object (plural), {oa}/{ob}: the object after
# {a}/{b}, singular after 1 (every object's plural is its singular plus "s"). Every template
# names the object or a person at least every 7 words, so that no 8-word run of a held-out
# problem (whose names and objects are its own) can occur in training text.
ADD = (
    "{n} has {a} {oa} and buys {b} more. How many {o} does {n} have now?",
    "{n} had {a} {oa}. {m} gave {n} {b} more {ob}. How many {o} does {n} have now?",
    "A basket holds {a} {oa}. {n} puts {b} more {ob} in the basket. How many {o} are in the "
    "basket now?",
    "{n} found {a} {oa} on Monday and {b} {ob} on Tuesday. How many {o} did {n} find in all?",
    "{n} has {a} {oa}. {m} has {b} {ob}. How many {o} do {n} and {m} have together?",
    "{n} picked {a} {oa} and then picked {b} more {ob}. How many {o} did {n} pick?",
)
SUB = (
    "{n} has {a} {oa} and gives {b} {ob} to {m}. How many {o} does {n} have left?",
    "{n} had {a} {oa}. {n} lost {b} {ob}. How many {o} does {n} have now?",
    "The table has {a} {oa} on it. {n} takes {b} {ob} away. How many {o} are left on the table?",
    "{n} had {a} {oa} and sold {b} {ob}. How many {o} does {n} have left?",
    "{n} has {a} {oa}. {n} uses {b} of the {o}. How many {o} are left?",
    "{n} had {a} {oa}. {m} took {b} of the {o}. How many {o} does {n} have now?",
)

TOPICS = {
    "cats": ["Cats sleep in the warm sun.", "A cat likes to chase a ball.", "My cat has soft fur."],
    "dogs": ["Dogs like to run in the park.", "A dog can wag its tail.", "Our dog barks at birds."],
    "the sea": ["The sea is wide and deep.", "Waves roll onto the sand.", "Fish swim in the sea."],
    "rain": [
        "Rain falls from grey clouds.",
        "The rain makes the grass grow.",
        "We stay in when it rains.",
    ],
    "the sun": [
        "The sun rises in the east.",
        "The sun keeps us warm.",
        "The sun sets in the evening.",
    ],
    "trains": [
        "Trains run on long tracks.",
        "A train can carry many people.",
        "The train stops at the station.",
    ],
    "birds": [
        "Birds build nests in trees.",
        "A bird sings in the morning.",
        "Birds fly south in winter.",
    ],
    "winter": [
        "Winter days are short and cold.",
        "Snow covers the ground in winter.",
        "We wear hats in winter.",
    ],
    "bread": [
        "Bread is made from flour.",
        "We bake bread in the oven.",
        "Fresh bread smells good.",
    ],
    "the moon": [
        "The moon shines at night.",
        "The moon goes round the earth.",
        "The moon looks full tonight.",
    ],
    "gardens": [
        "A garden needs water and sun.",
        "Flowers grow in the garden.",
        "We plant seeds in spring.",
    ],
    "books": ["Books tell us stories.", "I read a book before bed.", "A library has many books."],
}
KEYWORDS = "red small happy warm quiet bright old green fast kind big soft".split()


@dataclass(frozen=True)
class Problem:
    question: str
    a: int
    op: str  # "+" or "-"
    b: int

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    def solution(self, answer: int | None = None) -> str:
        """The reply: the operation, the sum written out, then the answer (a wrong `answer` for
        DPO's rejected). Naming the operation first splits the problem into deciding what to do
        (from the verb) and doing it, and puts a word before the first number, which the
        tokenizer then reads as in the question (" 9", not a line-initial "9")."""
        c = self.answer if answer is None else answer
        verb = "Add" if self.op == "+" else "Subtract"
        return f"{verb}: {self.a} {self.op} {self.b} = {c}. The answer is {c}."


@dataclass(frozen=True)
class Instruction:
    """An instruction-following prompt with a reply that meets it and one that does not."""

    prompt: str
    reply: str
    broken: str
    constraint: dict[str, Any]  # open-instruct's IFEval form: {"func_name", <arguments>}


def problem(rng: random.Random, names: list[str], objects: list[str]) -> Problem:
    op = rng.choice("+-")
    if op == "+":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
    else:  # the addition facts backwards: 13 - 5 = 8
        b, c = rng.randint(1, 9), rng.randint(0, 9)
        a = b + c
    n, m = rng.sample(names, 2)
    template = rng.choice(ADD if op == "+" else SUB)
    o = rng.choice(objects)
    oa, ob = (o[:-1] if k == 1 else o for k in (a, b))
    return Problem(template.format(n=n, m=m, o=o, oa=oa, ob=ob, a=a, b=b), a, op, b)


def wrong(rng: random.Random, p: Problem) -> str:
    """A plausible wrong reply: the other operation, or off by one or two."""
    if rng.random() < 0.3:
        if p.op == "-":
            return Problem(p.question, p.a, "+", p.b).solution()
        if p.a != p.b:
            return Problem(p.question, max(p.a, p.b), "-", min(p.a, p.b)).solution()
    c = p.answer + rng.choice([-2, -1, 1, 2])
    return p.solution(c if c >= 0 else p.answer + 1)


def _sentence(rng: random.Random, topic: str, avoid: str = "") -> str:
    choices = (
        [s for s in TOPICS[topic] if avoid.lower() not in s.lower()] if avoid else TOPICS[topic]
    )
    return rng.choice(choices)


def _keyword(rng: random.Random, topic: str) -> Instruction:
    kw = rng.choice([k for k in KEYWORDS if all(k not in s.lower() for s in TOPICS[topic])])
    base = _sentence(rng, topic)
    return Instruction(
        f'Write one sentence about {topic}. Use the word "{kw}".',
        f"{base[:-1]}, and it is {kw}.",
        base,
        {"func_name": "verify_keywords", "keyword_list": [kw]},
    )


def _forbidden(rng: random.Random, topic: str) -> Instruction:
    word = rng.choice(KEYWORDS)
    other = rng.choice([k for k in KEYWORDS if k != word])
    base = _sentence(rng, topic, avoid=word)[:-1]
    return Instruction(
        f'Write one sentence about {topic} without the word "{word}".',
        f"{base}, and it is {other}.",
        f"{base}, and it is {word}.",
        {"func_name": "validate_forbidden_words", "forbidden_words": [word]},
    )


def _at_most(rng: random.Random, topic: str) -> Instruction:
    reply = _sentence(rng, topic)
    n = len(reply.split()) + rng.randint(0, 3)
    long = " ".join(TOPICS[topic] + TOPICS[topic][:1])
    return Instruction(
        f"Describe {topic} in at most {n} words.",
        reply,
        long,
        {"func_name": "validate_word_constraint", "N": n, "quantifier": "at most"},
    )


def _paragraphs(rng: random.Random, topic: str) -> Instruction:
    first, second = rng.sample(TOPICS[topic], 2)
    return Instruction(
        f"Write two short paragraphs about {topic}. Separate them with * * *.",
        f"{first}\n* * *\n{second}",
        f"{first} {second}",
        {"func_name": "verify_paragraph_count", "N": 2},
    )


def _json(rng: random.Random, topic: str) -> Instruction:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Instruction(
        f'What is {a} plus {b}? Reply only with JSON, using the key "answer".',
        json.dumps({"answer": a + b}),
        f"The answer is {a + b}.",
        {"func_name": "validate_json_format"},
    )


INSTRUCTIONS: tuple[tuple[Callable[[random.Random, str], Instruction], float], ...] = (
    (_keyword, 0.3),
    (_at_most, 0.25),
    (_json, 0.2),
    (_paragraphs, 0.15),
    (_forbidden, 0.1),
)


def instruction(rng: random.Random) -> Instruction:
    make = rng.choices([f for f, _ in INSTRUCTIONS], weights=[w for _, w in INSTRUCTIONS])[0]
    return make(rng, rng.choice(sorted(TOPICS)))


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def corpus_doc(rng: random.Random) -> str:
    """Several solved problems in plain "Question: ... Answer: ..." form, now and then an
    instruction followed or a sentence about what someone likes. The latter also name the
    eval's people and objects (never in a problem), so that the tokenizer and the model know
    those words and the eval measures reading a problem, not meeting a word for the first time.
    """
    parts = []
    for _ in range(rng.randint(4, 7)):
        draw = rng.random()
        if draw < 0.15:
            ins = instruction(rng)
            parts.append(f"Question: {ins.prompt}\nAnswer: {ins.reply}")
        elif draw < 0.25:
            n = rng.choice(NAMES + EVAL_NAMES)
            o = rng.choice(OBJECTS + EVAL_OBJECTS)
            parts.append(f"Question: What does {n} like?\nAnswer: {n} likes {o}.")
        else:
            p = problem(rng, NAMES, OBJECTS)
            parts.append(f"Question: {p.question}\nAnswer: {p.solution()}")
    return "\n\n".join(parts)


def words(text: str) -> list[str]:
    """Words as curate's decontamination splits them: NFC, case-folded, split at anything but a
    letter or digit."""
    return [w for w in re.split(r"[\W_]+", unicodedata.normalize("NFC", text).casefold()) if w]


def ngrams(text: str, n: int = DECONTAM_NGRAM) -> Iterable[tuple[str, ...]]:
    ws = words(text)
    if len(ws) < n:
        return [tuple(ws)]
    return (tuple(ws[i : i + n]) for i in range(len(ws) - n + 1))


def build(seed: int = SEED) -> dict[str, Any]:
    """Every file's rows, plus what the tests check but the files need not hold: the reply
    intended for each rlvr row and the constraint behind each instruction-following dpo pair."""
    rng = random.Random(seed)
    corpus = [{"text": corpus_doc(rng)} for _ in range(CORPUS_DOCS)]

    seen: set[str] = set()  # no question twice across sft, dpo and rlvr

    def fresh_problem() -> Problem:
        while True:
            p = problem(rng, NAMES, OBJECTS)
            if p.question not in seen:
                seen.add(p.question)
                return p

    sft, dpo, rlvr = [], [], []
    intended: list[str] = []  # the reply each rlvr row's verifier must score 1
    dpo_constraints: list[dict[str, Any] | None] = []  # per dpo row; None for arithmetic
    for _ in range(SFT_ROWS):
        if rng.random() < IF_SHARE["sft"]:
            ins = instruction(rng)
            prompt, reply = ins.prompt, ins.reply
        else:
            p = fresh_problem()
            prompt, reply = p.question, p.solution()
        sft.append({"messages": [*user(prompt), {"role": "assistant", "content": reply}]})
    for _ in range(DPO_ROWS):
        if rng.random() < IF_SHARE["dpo"]:
            ins = instruction(rng)
            row = {"prompt": user(ins.prompt), "chosen": ins.reply, "rejected": ins.broken}
            dpo_constraints.append(ins.constraint)
        else:
            p = fresh_problem()
            row = {"prompt": user(p.question), "chosen": p.solution(), "rejected": wrong(rng, p)}
            dpo_constraints.append(None)
        dpo.append(row)
    for _ in range(RLVR_ROWS):
        if rng.random() < IF_SHARE["rlvr"]:
            ins = instruction(rng)
            truth = json.dumps(ins.constraint)
            row = {"messages": user(ins.prompt), "ground_truth": truth, "dataset": "ifeval"}
            intended.append(ins.reply)
        else:
            p = fresh_problem()
            row = {"messages": user(p.question), "ground_truth": str(p.answer), "dataset": "gsm8k"}
            intended.append(p.solution())
        rlvr.append(row)

    trained = set()
    for text in training_texts({"corpus": corpus, "sft": sft, "dpo": dpo, "rlvr": rlvr}):
        trained.update(ngrams(text))
    evals: list[dict[str, Any]] = []
    asked: set[str] = set()
    while len(evals) < EVAL_ROWS:
        p = problem(rng, EVAL_NAMES, EVAL_OBJECTS)
        item = f"Question: {p.question}\nAnswer: {p.answer}"  # what decontamination reads
        if p.question in asked or any(g in trained for g in ngrams(item)):
            continue
        asked.add(p.question)
        evals.append(
            {"id": f"arith-{len(evals):03d}", "question": p.question, "answer": str(p.answer)}
        )
    return {
        **{"corpus": corpus, "sft": sft, "dpo": dpo, "rlvr": rlvr, "evals": evals},
        **{"intended": intended, "dpo_constraints": dpo_constraints},
    }


def training_texts(files: dict[str, list[dict[str, Any]]]) -> Iterable[str]:
    """Every string a training file holds (texts, turns, chosen and rejected replies)."""

    def strings(value: Any) -> Iterable[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    for rows in files.values():
        for row in rows:
            yield from strings(row)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=HERE, help="where the training files go")
    parser.add_argument("--evals-dir", type=Path, default=EVALS, help="where arith.jsonl goes")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    built = build(args.seed)
    for name in ("corpus", "sft", "dpo", "rlvr"):
        write_jsonl(args.data_dir / f"{name}.jsonl", built[name])
    write_jsonl(args.evals_dir / "arith.jsonl", built["evals"])


if __name__ == "__main__":
    main()
