"""Heuristic document quality filters from Gopher and C4, as small checks a config can tune.

Web-scale corpora are mostly text nobody would want a model to imitate: menus, tag clouds, link
lists, placeholder pages, machine-generated repetition. Gopher (Rae et al. 2021, "Scaling
Language Models", appendix A.1.1) and C4 (Raffel et al. 2020, "Exploring the Limits of Transfer
Learning", section 2.2) showed that a handful of cheap statistics catch most of it. Each rule
here measures one statistic and, when it is out of bounds, says so as
"<rule>: <measured> <op> <threshold>", so a user can see which setting to relax.

Rules run in the order of `FILTERS`; `check` returns every failing rule in that order, so a
caller that counts a removed document against its first failing rule (`first_failure`, as the
scan does) gets counts that add up. Setting a rule's threshold to None turns the rule off.

Line and paragraph rules need the raw text: run `check` before `text.normalise`, which folds
newlines into spaces and would leave every document a single line.

Tokenisation is a single whitespace split (`str.split`, the same as the regex `\\S+` but faster),
as Gopher counts words; punctuation glued to a word is then stripped from its ends for the
length, stop-word and n-gram statistics, so "sea." and "sea" are the same word of length 3.
No language-specific tokenizer: the rules are meant to be deterministic, dependency-free and
fast, and they are English-centric anyway (the stop words are English).
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

FILTERS: tuple[str, ...] = (
    "gopher_word_count",
    "gopher_mean_word_length",
    "gopher_symbol_word_ratio",
    "gopher_bullet_lines",
    "gopher_ellipsis_lines",
    "gopher_alpha_words",
    "gopher_stop_words",
    "gopher_duplicate_lines",
    "gopher_duplicate_paragraphs",
    "gopher_top_ngram",
    "c4_terminal_punctuation",
    "c4_lorem_ipsum",
)

# Stripped from word ends before measuring length, stop words and n-grams.
_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’«»…—–¡¿"
_BULLETS = ("-", "*", "•", "‣", "◦", "●", "○", "▪", "■", "□", "⁃", "·", "–")
_ELLIPSES = ("...", "…")
# C4 keeps a line ending in terminal punctuation, a closing quote after it included.
_TERMINAL = (".", "!", "?", '"', "'", "”", "’")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_BOILERPLATE_DEFAULT = (
    "javascript",
    "cookie policy",
    "terms of use",
    "privacy policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


class QualityConfig(BaseModel):
    """Thresholds of the quality rules; None turns a rule off. Defaults are the papers' values."""

    model_config = ConfigDict(extra="forbid")

    min_words: int | None = Field(
        50, ge=0, description="gopher_word_count: fewest whitespace-separated words (Gopher: 50)"
    )
    max_words: int | None = Field(
        100_000, ge=1, description="gopher_word_count: most words (Gopher: 100,000)"
    )
    min_mean_word_length: float | None = Field(
        3.0, ge=0.0, description="gopher_mean_word_length: lowest mean word length (Gopher: 3)"
    )
    max_mean_word_length: float | None = Field(
        10.0, ge=0.0, description="gopher_mean_word_length: highest mean word length (Gopher: 10)"
    )
    max_symbol_word_ratio: float | None = Field(
        0.1,
        ge=0.0,
        description="gopher_symbol_word_ratio: most '#' per word, and most ellipses ('...' or "
        "'…') per word, each measured on its own (Gopher: 0.1)",
    )
    max_bullet_line_fraction: float | None = Field(
        0.9,
        ge=0.0,
        le=1.0,
        description="gopher_bullet_lines: largest fraction of non-blank lines starting with a "
        "bullet (Gopher: 0.9)",
    )
    max_ellipsis_line_fraction: float | None = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="gopher_ellipsis_lines: largest fraction of non-blank lines ending with an "
        "ellipsis (Gopher: 0.3)",
    )
    min_alpha_word_fraction: float | None = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="gopher_alpha_words: smallest fraction of words holding an alphabetic "
        "character (Gopher: 0.8)",
    )
    stop_words: tuple[str, ...] = Field(
        ("the", "be", "to", "of", "and", "that", "have", "with"),
        description="gopher_stop_words: the words counted, lower case (Gopher's list)",
    )
    min_stop_words: int | None = Field(
        2,
        ge=0,
        description="gopher_stop_words: fewest occurrences of the stop words, repeats counted "
        "(Gopher: 2)",
    )
    max_duplicate_line_fraction: float | None = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="gopher_duplicate_lines: largest fraction of non-blank lines that repeat an "
        "earlier line (Gopher: 0.3)",
    )
    max_duplicate_paragraph_fraction: float | None = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="gopher_duplicate_paragraphs: largest fraction of paragraphs (separated by "
        "blank lines) that repeat an earlier paragraph (Gopher: 0.3)",
    )
    max_top_2gram_char_fraction: float | None = Field(
        0.20,
        ge=0.0,
        le=1.0,
        description="gopher_top_ngram: largest fraction of word characters covered by the most "
        "frequent word 2-gram (Gopher: 0.20)",
    )
    max_top_3gram_char_fraction: float | None = Field(
        0.18, ge=0.0, le=1.0, description="gopher_top_ngram: the same for 3-grams (Gopher: 0.18)"
    )
    max_top_4gram_char_fraction: float | None = Field(
        0.16, ge=0.0, le=1.0, description="gopher_top_ngram: the same for 4-grams (Gopher: 0.16)"
    )
    min_terminal_punctuation_line_fraction: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="c4_terminal_punctuation: smallest fraction of non-blank lines ending in "
        ". ! ? or a closing quote; none: off (C4 drops such lines one by one, which would turn "
        "most code, verse and lists into nothing)",
    )
    lorem_ipsum: bool = Field(
        True, description="c4_lorem_ipsum: drop documents containing 'lorem ipsum' (C4)"
    )
    boilerplate_phrases: tuple[str, ...] | None = Field(
        _BOILERPLATE_DEFAULT,
        description="drop_boilerplate_lines: lines containing any of these (case-insensitive) "
        "are removed (C4's list); none: keep every line",
    )


def _fmt(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:.4g}"


def _duplicate_fraction(items: list[str]) -> float:
    """The fraction of items equal to an earlier item (so a text of unique items scores 0)."""
    if not items:
        return 0.0
    return (len(items) - len(set(items))) / len(items)


def _top_ngram_char_fraction(words: list[str], n: int, total_chars: int) -> float:
    """Characters covered by the most frequent word n-gram, over all word characters.

    An n-gram seen once is not repetition, so it scores 0: without that, a short document's
    single longest n-gram would count against it.
    """
    if len(words) < n or total_chars == 0:
        return 0.0
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / total_chars


def check(text: str, config: QualityConfig) -> list[str]:
    """Every rule the raw text fails, in `FILTERS` order, as "<rule>: <measured> <op> <limit>".

    An empty list means keep the document.
    """
    failed: list[str] = []
    tokens = text.split()
    n_tokens = len(tokens)
    stripped = [t.strip(_PUNCTUATION) for t in tokens]
    words = [w.lower() for w in stripped if w]
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]

    if config.min_words is not None and n_tokens < config.min_words:
        failed.append(f"gopher_word_count: {n_tokens} < {config.min_words}")
    elif config.max_words is not None and n_tokens > config.max_words:
        failed.append(f"gopher_word_count: {n_tokens} > {config.max_words}")

    word_chars = sum(map(len, words))
    if words:
        mean = word_chars / len(words)
        if config.min_mean_word_length is not None and mean < config.min_mean_word_length:
            failed.append(
                f"gopher_mean_word_length: {_fmt(mean)} < {_fmt(config.min_mean_word_length)}"
            )
        elif config.max_mean_word_length is not None and mean > config.max_mean_word_length:
            failed.append(
                f"gopher_mean_word_length: {_fmt(mean)} > {_fmt(config.max_mean_word_length)}"
            )

    if config.max_symbol_word_ratio is not None and n_tokens:
        # "…" is not made of "...", so the two ellipsis counts never overlap.
        ratios = {
            "'#'": text.count("#") / n_tokens,
            "ellipsis": (text.count("...") + text.count("…")) / n_tokens,
        }
        symbol, ratio = max(ratios.items(), key=lambda item: item[1])
        if ratio > config.max_symbol_word_ratio:
            failed.append(
                f"gopher_symbol_word_ratio: {symbol} {_fmt(ratio)} > "
                f"{_fmt(config.max_symbol_word_ratio)}"
            )

    if config.max_bullet_line_fraction is not None and lines:
        fraction = sum(line.startswith(_BULLETS) for line in lines) / len(lines)
        if fraction > config.max_bullet_line_fraction:
            failed.append(
                f"gopher_bullet_lines: {_fmt(fraction)} > {_fmt(config.max_bullet_line_fraction)}"
            )

    if config.max_ellipsis_line_fraction is not None and lines:
        fraction = sum(line.endswith(_ELLIPSES) for line in lines) / len(lines)
        if fraction > config.max_ellipsis_line_fraction:
            failed.append(
                f"gopher_ellipsis_lines: {_fmt(fraction)} > "
                f"{_fmt(config.max_ellipsis_line_fraction)}"
            )

    if config.min_alpha_word_fraction is not None and n_tokens:
        fraction = sum(any(c.isalpha() for c in t) for t in tokens) / n_tokens
        if fraction < config.min_alpha_word_fraction:
            failed.append(
                f"gopher_alpha_words: {_fmt(fraction)} < {_fmt(config.min_alpha_word_fraction)}"
            )

    if config.min_stop_words is not None:
        stop = frozenset(config.stop_words)
        found = sum(w in stop for w in words)
        if found < config.min_stop_words:
            failed.append(f"gopher_stop_words: {found} < {config.min_stop_words}")

    if config.max_duplicate_line_fraction is not None:
        fraction = _duplicate_fraction(lines)
        if fraction > config.max_duplicate_line_fraction:
            failed.append(
                f"gopher_duplicate_lines: {_fmt(fraction)} > "
                f"{_fmt(config.max_duplicate_line_fraction)}"
            )

    if config.max_duplicate_paragraph_fraction is not None:
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text)]
        fraction = _duplicate_fraction([p for p in paragraphs if p])
        if fraction > config.max_duplicate_paragraph_fraction:
            failed.append(
                f"gopher_duplicate_paragraphs: {_fmt(fraction)} > "
                f"{_fmt(config.max_duplicate_paragraph_fraction)}"
            )

    for n, limit in (
        (2, config.max_top_2gram_char_fraction),
        (3, config.max_top_3gram_char_fraction),
        (4, config.max_top_4gram_char_fraction),
    ):
        if limit is None:
            continue
        fraction = _top_ngram_char_fraction(words, n, word_chars)
        if fraction > limit:
            # One reason per document: a repeated 2-gram usually repeats as 3- and 4-grams too.
            failed.append(f"gopher_top_ngram: {n}-gram {_fmt(fraction)} > {_fmt(limit)}")
            break

    if config.min_terminal_punctuation_line_fraction is not None and lines:
        fraction = sum(line.endswith(_TERMINAL) for line in lines) / len(lines)
        if fraction < config.min_terminal_punctuation_line_fraction:
            failed.append(
                f"c4_terminal_punctuation: {_fmt(fraction)} < "
                f"{_fmt(config.min_terminal_punctuation_line_fraction)}"
            )

    if config.lorem_ipsum and "lorem ipsum" in text.lower():
        failed.append("c4_lorem_ipsum: contains 'lorem ipsum'")

    return failed


def first_failure(text: str, config: QualityConfig) -> str | None:
    """The name of the first rule the raw text fails (the filter it is counted under), or None."""
    failed = check(text, config)
    return failed[0].split(":", 1)[0] if failed else None


def drop_boilerplate_lines(text: str, config: QualityConfig) -> tuple[str, int]:
    """The text without C4's boilerplate lines (cookie notices, "enable JavaScript", ...).

    Returns the kept text and how many lines were dropped. C4 removes these lines rather than the
    whole page, since a page that mentions its cookie policy in the footer is often fine above it.
    Matching is by substring, so prose about JavaScript loses that line too: C4's trade-off.
    """
    if not config.boilerplate_phrases:
        return text, 0
    phrases = tuple(p.lower() for p in config.boilerplate_phrases)
    kept: list[str] = []
    dropped = 0
    for line in text.splitlines(keepends=True):
        lowered = line.lower()
        if any(p in lowered for p in phrases):
            dropped += 1
        else:
            kept.append(line)
    return "".join(kept), dropped
