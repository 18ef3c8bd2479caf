"""Tests of the curate stage's quality filters and PII scrubbing on small hand-made documents.

Every quality rule gets one document that fails it and no other rule, checked against the
default config, and a clean passage of prose must pass them all. PII tests pair each type
with near-misses that ordinary text is full of and that must be left alone.
"""

from __future__ import annotations

import itertools

import pytest
from pydantic import ValidationError

from cairn.stages.curate.pii import luhn_valid, scrub
from cairn.stages.curate.quality import FILTERS, QualityConfig, check, drop_boilerplate_lines

DEFAULTS = QualityConfig()

PROSE_LINES = [
    "Call it a habit of mine, but whenever the town grows grey and damp, I go down to the harbour.",
    "There the ships lie at anchor with their sails furled, and the gulls wheel above the masts.",
    "An old sailor once told me that the sea keeps no record of the men who cross it.",
    "He had been a harpooner in his youth and had seen the great whales rise beside his boat.",
    "Now he mended nets by the quay and spoke of storms as other men speak of the weather.",
    "I listened to him for hours, watching the tide come in over the worn stones of the pier.",
    "When the lamps were lit along the water, he would stand, shake out his coat and walk home.",
    "I never learned his name, yet I remember his voice better than those of many friends.",
]
PROSE = "\n".join(PROSE_LINES[:4]) + "\n\n" + "\n".join(PROSE_LINES[4:])

# Distinct made-up words with no stop word among them: "bade", "kilo", "muse", ...
SYLLABLES = ["ba", "de", "ki", "lo", "mu", "ra", "se", "ti"]
WORDS = ["".join(p) for p in itertools.product(SYLLABLES, repeat=2)]


def failing(text: str, config: QualityConfig = DEFAULTS) -> list[str]:
    """The names of the rules a text fails (the reasons without their measurements)."""
    return [reason.split(":", 1)[0] for reason in check(text, config)]


# --- quality: documents that fail exactly one rule --------------------------------------------

SHORT = "The old sailor sat by the quay and mended his nets in the evening light."
LONG_WORDS = " ".join(
    ["the", "and"] + [f"incomprehensible{w}" for w in WORDS[:60]]
)  # mean length > 10
TWO_LETTERS = [c + v for c in "bdfgklmnprstvz" for v in "aeiou" if c + v not in ("be", "to")]
SHORT_WORDS = " ".join(["the", "and", "of"] + TWO_LETTERS[:60])  # mean length < 3
HASHTAGS = PROSE + "\n" + " ".join(f"#{w}" for w in WORDS[:25])
BULLETS = "\n".join(f"- {line}" for line in PROSE_LINES)
ELLIPSES = "\n".join(line[:-1] + "..." if i % 2 else line for i, line in enumerate(PROSE_LINES))
NUMBERS = PROSE + "\n" + " ".join(str(n) for n in range(1000, 1045))
NO_STOP_WORDS = " ".join(WORDS[:60]).capitalize() + "."
DUPLICATE_LINES = "\n".join(PROSE_LINES + PROSE_LINES[:4])
DUPLICATE_PARAGRAPHS = "\n\n".join(
    [
        "\n".join(PROSE_LINES[0:3]),
        "\n".join(PROSE_LINES[3:6]),
        "\n".join(PROSE_LINES[6:8]),
        "Read more.",
        "Read more.",
        "Read more.",
    ]
)
REPEATED_PHRASE = " ".join(f"{w} the white whale" for w in WORDS[:30])
LOREM = PROSE + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit."
NO_FULL_STOPS = "\n".join(line.rstrip(".") for line in PROSE_LINES)

ONE_RULE = [
    # (rule, document, the config field that turns the rule off, config overrides)
    ("gopher_word_count", SHORT, "min_words", {}),
    ("gopher_word_count", PROSE, "max_words", {"max_words": 100}),
    ("gopher_mean_word_length", LONG_WORDS, "max_mean_word_length", {}),
    ("gopher_mean_word_length", SHORT_WORDS, "min_mean_word_length", {}),
    ("gopher_symbol_word_ratio", HASHTAGS, "max_symbol_word_ratio", {}),
    ("gopher_bullet_lines", BULLETS, "max_bullet_line_fraction", {}),
    ("gopher_ellipsis_lines", ELLIPSES, "max_ellipsis_line_fraction", {}),
    ("gopher_alpha_words", NUMBERS, "min_alpha_word_fraction", {}),
    ("gopher_stop_words", NO_STOP_WORDS, "min_stop_words", {}),
    ("gopher_duplicate_lines", DUPLICATE_LINES, "max_duplicate_line_fraction", {}),
    ("gopher_duplicate_paragraphs", DUPLICATE_PARAGRAPHS, "max_duplicate_paragraph_fraction", {}),
    ("gopher_top_ngram", REPEATED_PHRASE, "max_top_2gram_char_fraction", {}),
    (
        "c4_terminal_punctuation",
        NO_FULL_STOPS,
        "min_terminal_punctuation_line_fraction",
        {"min_terminal_punctuation_line_fraction": 0.5},
    ),
    ("c4_lorem_ipsum", LOREM, "lorem_ipsum", {}),
]


def test_clean_prose_passes_every_rule() -> None:
    assert check(PROSE, DEFAULTS) == []
    strict = QualityConfig(min_terminal_punctuation_line_fraction=1.0)
    assert check(PROSE, strict) == []


@pytest.mark.parametrize(
    ("rule", "text", "field", "overrides"), ONE_RULE, ids=[r[2] for r in ONE_RULE]
)
def test_document_fails_exactly_one_rule(
    rule: str, text: str, field: str, overrides: dict[str, object]
) -> None:
    config = QualityConfig(**overrides)
    assert failing(text, config) == [rule]
    reason = check(text, config)[0]
    assert any(op in reason for op in (" < ", " > ", "contains")), reason


@pytest.mark.parametrize(
    ("rule", "text", "field", "overrides"), ONE_RULE, ids=[r[2] for r in ONE_RULE]
)
def test_disabling_a_rule_stops_it_firing(
    rule: str, text: str, field: str, overrides: dict[str, object]
) -> None:
    off: object = False if field == "lorem_ipsum" else None
    config = QualityConfig(**{**overrides, field: off})
    if rule == "gopher_top_ngram":  # three thresholds, one rule
        config = config.model_copy(
            update={"max_top_3gram_char_fraction": None, "max_top_4gram_char_fraction": None}
        )
    assert rule not in failing(text, config)


def test_every_rule_is_covered_in_filter_order() -> None:
    assert sorted({r[0] for r in ONE_RULE}) == sorted(FILTERS)
    many = "\n".join(f"- lorem ipsum {w}..." for w in WORDS[:5])
    reasons = failing(many)
    assert len(reasons) > 3
    assert reasons == sorted(reasons, key=FILTERS.index)


def test_reason_names_the_measurement() -> None:
    assert check(SHORT, DEFAULTS) == ["gopher_word_count: 15 < 50"]
    assert check(LONG_WORDS, DEFAULTS)[0].startswith("gopher_mean_word_length: ")
    assert check(LONG_WORDS, DEFAULTS)[0].endswith(" > 10")


def test_top_ngram_reports_the_shortest_failing_n() -> None:
    (reason,) = check(REPEATED_PHRASE, DEFAULTS)
    assert reason.startswith("gopher_top_ngram: 2-gram ")
    # "the white whale" repeats; the 4-grams around it do not.
    only_3_and_4 = QualityConfig(max_top_2gram_char_fraction=None)
    assert check(REPEATED_PHRASE, only_3_and_4)[0].startswith("gopher_top_ngram: 3-gram ")


def test_config_rejects_unknown_fields_and_bad_fractions() -> None:
    with pytest.raises(ValidationError):
        QualityConfig(min_wrods=10)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        QualityConfig(max_bullet_line_fraction=1.5)


def test_drop_boilerplate_lines_counts_what_it_drops() -> None:
    text = "Real text here.\nThis site uses cookies.\nPlease enable JavaScript.\nMore real text.\n"
    kept, dropped = drop_boilerplate_lines(text, DEFAULTS)
    assert (kept, dropped) == ("Real text here.\nMore real text.\n", 2)
    assert drop_boilerplate_lines(text, QualityConfig(boilerplate_phrases=None)) == (text, 0)


# --- PII -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        ("Write to ishmael.m+sea@pequod.example.com today.", "Write to <EMAIL> today.", "email"),
        ("Call +44 20 7946 0958 now.", "Call <PHONE> now.", "phone"),
        ("Call (555) 123-4567 now.", "Call <PHONE> now.", "phone"),
        ("Call 555-123-4567 or 1-800-555-1234.", "Call <PHONE> or <PHONE>.", "phone"),
        ("Host 192.168.0.1.", "Host <IP_ADDRESS>.", "ip_address"),
        ("Host 2001:db8::8a2e:370:7334 up", "Host <IP_ADDRESS> up", "ip_address"),
        ("Card 4111 1111 1111 1111 ok", "Card <CREDIT_CARD> ok", "credit_card"),
        ("Card 5500-0000-0000-0004 ok", "Card <CREDIT_CARD> ok", "credit_card"),
        ("SSN 123-45-6789 ok", "SSN <SSN> ok", "ssn"),
    ],
)
def test_scrub_replaces_and_counts(text: str, expected: str, kind: str) -> None:
    scrubbed, counts = scrub(text)
    assert scrubbed == expected
    assert counts == {kind: expected.count("<")}


@pytest.mark.parametrize(
    "text",
    [
        "In 1599 the Globe opened.",
        "Act 3, Scene 2, line 1604.",
        "John 3:16 and Sonnet 18, lines 1-14.",
        "Upgrade to version 2.13.0 or 10.2.1.",
        "Not an address: 256.1.1.1 or 1.2.3.256 or 1.2.3.4.5.",
        "Order 4111111111111112 shipped.",  # fails Luhn
        "Reply to a@b please.",
        "On 2021-10-12 at 10:30:45, or 12/10/2021.",
        "It cost $1,234,567.89 and std::vector grew.",
        "Never issued: 000-12-3456 and 666-12-3456.",
    ],
)
def test_scrub_leaves_near_misses(text: str) -> None:
    assert scrub(text) == (text, {})


def test_scrub_counts_several_types_at_once() -> None:
    text = "Mail a@x.org or b@y.org, call +1 212 555 0100, from 10.0.0.1."
    scrubbed, counts = scrub(text)
    assert scrubbed == "Mail <EMAIL> or <EMAIL>, call <PHONE>, from <IP_ADDRESS>."
    assert counts == {"email": 2, "phone": 1, "ip_address": 1}


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
