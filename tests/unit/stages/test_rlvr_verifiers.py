"""Unit tests of the RLVR verifiers: every verifier and every IFEval constraint on completions that
must score 1 and completions that must score 0, and `problem()` on good and bad ground truths.

Pure functions on strings: no model, no Ray, milliseconds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cairn.stages.rlvr import verifiers as v

ROW: dict[str, Any] = {}


def gt(func_name: str, **args: Any) -> str:
    """An RLVR-IFeval ground truth as Tülu 3 writes it: every other argument present and null."""
    full: dict[str, Any] = {
        "func_name": func_name,
        "N": None,
        "quantifier": None,
        "end_phrase": None,
        "keyword_list": None,
        "word": None,
        "forbidden_words": None,
        "letter": None,
        "i": None,
        "first_word": None,
        "postscript_marker": None,
        "options": None,
        "section_splitter": None,
        "original_prompt": None,
    }
    full.update(args)
    return json.dumps(full)


def test_registry_names_and_defaults() -> None:
    assert {"final_number", "exact_match", "ifeval"} <= set(v.REGISTRY)
    assert v.DEFAULT_DATASETS == {
        "gsm8k": "final_number",
        "math": "exact_match",
        "ifeval": "ifeval",
    }
    assert all(name in v.REGISTRY for name in v.DEFAULT_DATASETS.values())
    assert v.get("final_number") is v.final_number
    with pytest.raises(KeyError, match="unknown verifier 'nope'.*exact_match"):
        v.get("nope")
    with pytest.raises(KeyError):
        v.problem("nope", "7", ROW)


@pytest.mark.parametrize(
    ("completion", "truth"),
    [
        ("3 + 4 = 7. The answer is 7.", "7"),
        ("The answer is 7", "7"),
        ("so we get\n#### 7", "7"),
        ("Therefore \\boxed{7}.", "7"),
        ("It costs $1,000 in all.", "1000"),
        ("It costs 1000.", "1,000"),
        ("12,345,678 people", "12345678"),
        ("5 - 8 = -3. The answer is -3.", "-3"),
        ("The answer is 7.0", "7"),
        ("The answer is 7", "7.00"),
        ("half of 5 is 2.5", "2.5"),
        ("first 3, then 18", "18"),
        ("9-2=7", "7"),
    ],
)
def test_final_number_scores_one(completion: str, truth: str) -> None:
    assert v.final_number(completion, truth, ROW) == 1.0


@pytest.mark.parametrize(
    ("completion", "truth"),
    [
        ("3 + 4 = 7. The answer is 8.", "7"),  # the last number counts, not any number
        ("The answer is 7, not 9", "7"),
        ("The answer is seven.", "7"),  # no number at all
        ("", "7"),
        ("The answer is 3", "-3"),
        ("The answer is 7.5", "7"),
        ("3,4", "34"),  # not a thousands separator
        ("The answer is 17", "7"),
    ],
)
def test_final_number_scores_zero(completion: str, truth: str) -> None:
    assert v.final_number(completion, truth, ROW) == 0.0


@pytest.mark.parametrize(
    ("completion", "truth"),
    [
        ("Paris", "paris"),
        ("  Paris.  ", "Paris"),
        ("The Eiffel   Tower!", "eiffel tower"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("$\\boxed{x+1}$", "x+1"),
        ("an apple", "Apple"),
        ("3.5", "3.5"),
    ],
)
def test_exact_match_scores_one(completion: str, truth: str) -> None:
    assert v.exact_match(completion, truth, ROW) == 1.0


@pytest.mark.parametrize(
    ("completion", "truth"),
    [
        ("Paris, France", "Paris"),
        ("The answer is Paris", "Paris"),  # exact match: no extraction of an answer phrase
        ("35", "3.5"),  # inner punctuation is kept
        ("\\boxed{x+2}", "x+1"),
        ("frac{1}{2", "\\frac{1}{2}"),  # LaTeX's backslash and braces are part of the answer
        ("", "x"),
    ],
)
def test_exact_match_scores_zero(completion: str, truth: str) -> None:
    assert v.exact_match(completion, truth, ROW) == 0.0


TWO_PARAGRAPHS = "The cat sat.\n* * *\nThe dog ran."

# (ground truth, completions scoring 1, completions scoring 0) for every IFEval constraint
IFEVAL_CASES: list[tuple[str, list[str], list[str]]] = [
    (
        gt("validate_word_constraint", N=5, quantifier="at least"),
        ["one two three four five", "a b c d e f g"],
        ["one two three four", ""],
    ),
    (
        gt("validate_word_constraint", N=3, quantifier="at most"),
        ["one two three", "yes", ""],
        ["one two three four"],
    ),
    (
        gt("validate_word_constraint", N=20, quantifier="around"),
        [" ".join(["w"] * 18), " ".join(["w"] * 22)],  # tolerance: 10% of 20
        [" ".join(["w"] * 17), " ".join(["w"] * 23)],
    ),
    (
        gt("validate_word_constraint", N=4, quantifier="around"),
        ["a b c", "a b c d e"],  # tolerance at least 1
        ["a b", "a b c d e f"],
    ),
    (
        gt("verify_keywords", keyword_list=["apple", "Red"]),
        ["A red APPLE.", "apples are reddish"],  # substring match, as in open-instruct
        ["A red pear.", "an apple"],
    ),
    (
        gt("validate_forbidden_words", forbidden_words=["apple", "pear"]),
        ["A plum.", ""],
        ["An Apple.", "pears", "a pear and a plum"],
    ),
    (
        gt("verify_keyword_frequency", word="cat", N=2),
        ["Cat and cat.", "the cat, the CAT, the cats"],
        ["cat", "cat cat cat"],
    ),
    (
        gt("verify_paragraph_count", N=2),
        [TWO_PARAGRAPHS, "  One.  \n  * * *  \n  Two.  "],
        ["The cat sat.\n\nThe dog ran.", "One.\n* * *\n* * *\nTwo.", "* * *\nOne.", "One."],
    ),
    (
        gt("verify_paragraph_count", N=1),
        ["Just one paragraph.\nWith two lines."],
        [TWO_PARAGRAPHS],
    ),
    (
        gt("validate_json_format"),
        ['{"answer": 7}', "[1, 2]", '  {"a": "b"}\n'],
        ["answer: 7", '{"answer": 7', "```json\n{}\n```"],
    ),
    (gt("validate_lowercase"), ["all lower, 7."], ["Not lower."]),
    (gt("validate_uppercase"), ["ALL UPPER, 7."], ["NOT Upper."]),
    (gt("validate_no_commas"), ["No commas here."], ["One, two."]),
    (
        gt("validate_end", end_phrase="Any other questions?"),
        ["It is 7. Any other questions?"],
        ["Any other questions? It is 7."],
    ),
    (gt("validate_quotation"), ['"It is 7."'], ['It is "7".']),
    (gt("validate_title"), ["<<Sums>>\n3 + 4 = 7."], ["Sums\n3 + 4 = 7.", "<Sums>"]),
]


def test_every_ifeval_constraint_is_tested() -> None:
    tested = {json.loads(truth)["func_name"] for truth, _, _ in IFEVAL_CASES}
    assert tested == set(v.IFEVAL_FUNCTIONS)
    for required in (
        "validate_word_constraint",
        "verify_keywords",
        "validate_forbidden_words",
        "verify_paragraph_count",
        "validate_json_format",
    ):
        assert required in v.IFEVAL_FUNCTIONS


@pytest.mark.parametrize(("truth", "good", "bad"), IFEVAL_CASES)
def test_ifeval_constraints(truth: str, good: list[str], bad: list[str]) -> None:
    assert v.problem("ifeval", truth, ROW) is None
    for completion in good:
        assert v.ifeval(completion, truth, ROW) == 1.0, completion
    for completion in bad:
        assert v.ifeval(completion, truth, ROW) == 0.0, completion


def test_ifeval_takes_compact_and_dict_ground_truths() -> None:
    compact = '{"func_name": "verify_keywords", "keyword_list": ["apple"]}'
    assert v.ifeval("an apple", compact, ROW) == 1.0
    as_dict: Any = {"func_name": "verify_keywords", "keyword_list": ["apple"]}
    assert v.problem("ifeval", as_dict, ROW) is None
    assert v.ifeval("an apple", as_dict, ROW) == 1.0


@pytest.mark.parametrize(
    ("name", "truth"),
    [
        ("final_number", "7"),
        ("final_number", 7),
        ("final_number", "-3"),
        ("final_number", "1,000"),
        ("final_number", "2.50"),
        ("exact_match", "Paris"),
        ("exact_match", "\\frac{1}{2}"),
        ("exact_match", 3),
        ("ifeval", gt("validate_word_constraint", N=10, quantifier="at most")),
        ("ifeval", gt("validate_json_format")),
    ],
)
def test_problem_accepts_good_ground_truths(name: str, truth: Any) -> None:
    assert v.problem(name, truth, ROW) is None


@pytest.mark.parametrize(
    ("name", "truth", "why"),
    [
        ("final_number", None, "missing"),
        ("final_number", "seven", "not a number"),
        ("final_number", "", "not a number"),
        ("final_number", "3 + 4", "not a number"),
        ("final_number", True, "not a number"),
        ("final_number", ["7"], "not a number"),
        ("exact_match", "  the . ", "empty once normalised"),
        ("exact_match", {"a": 1}, "not a string"),
        ("ifeval", "func_name: verify_keywords", "not JSON"),
        ("ifeval", "[1, 2]", "not an object"),
        ("ifeval", 7, "not a JSON object string"),
        ("ifeval", '{"N": 3}', "has no func_name"),
        ("ifeval", gt("validate_response_language", language="en"), "not a known IFEval"),
        ("ifeval", gt("validate_word_constraint", N=10), "needs the argument 'quantifier'"),
        ("ifeval", gt("verify_keywords"), "needs the argument 'keyword_list'"),
        (
            "ifeval",
            gt("validate_word_constraint", N=10, quantifier="exactly"),
            "argument 'quantifier' is 'exactly'",
        ),
        ("ifeval", gt("verify_paragraph_count", N="2"), "argument 'N' is '2'"),
        ("ifeval", gt("verify_keywords", keyword_list="apple"), "argument 'keyword_list'"),
        ("ifeval", gt("verify_keywords", keyword_list=[]), "argument 'keyword_list'"),
        ("ifeval", gt("validate_json_format", N=3), "takes no argument 'N' (it takes: none)"),
        ("ifeval", gt("verify_paragraph_count", N=2, word="x"), "no argument 'word' (it takes: N)"),
        ("ifeval", '{"func_name": ["verify_keywords"]}', "is not a known IFEval constraint"),
    ],
)
def test_problem_rejects_bad_ground_truths(name: str, truth: Any, why: str) -> None:
    found = v.problem(name, truth, ROW)
    assert found is not None and why in found, found


def test_a_rejected_ground_truth_scores_zero_not_an_exception() -> None:
    assert v.ifeval("anything", "not json", ROW) == 0.0
    assert v.ifeval("anything", gt("no_such_check"), ROW) == 0.0
    assert v.final_number("7", "seven", ROW) == 0.0
