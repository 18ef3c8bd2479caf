"""Tests of curate's language identification (`cairn.stages.curate.language`, py3langid)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from cairn.stages.curate import language
from cairn.stages.curate.language import LanguageConfig

ENGLISH = (
    "The committee met on Tuesday to discuss the new library, which will open next spring. "
    "Most members agreed that the reading rooms should stay open late in the evening."
)
FRENCH = (
    "Le comité s'est réuni mardi pour discuter de la nouvelle bibliothèque, qui ouvrira au "
    "printemps prochain. La plupart des membres ont convenu que les salles de lecture "
    "devraient rester ouvertes tard le soir."
)
GERMAN = (
    "Der Ausschuss traf sich am Dienstag, um über die neue Bibliothek zu sprechen, die im "
    "nächsten Frühjahr eröffnet wird. Die meisten Mitglieder waren sich einig, dass die "
    "Lesesäle abends lange geöffnet bleiben sollten."
)


def test_identifies_english_french_and_german_with_high_scores():
    got = language.identify([ENGLISH, FRENCH, GERMAN])
    assert [code for code, _ in got] == ["en", "fr", "de"]
    assert all(0.9 < score <= 1.0 for _, score in got)


def test_check_keeps_english_and_rejects_other_languages():
    cfg = LanguageConfig()
    assert cfg.keep == ["en"] and cfg.min_score == 0.5
    assert language.check(ENGLISH, cfg) is None
    assert language.check(FRENCH, cfg) == "language"
    assert language.check(GERMAN, cfg) == "language"
    assert language.check_batch([GERMAN, ENGLISH], LanguageConfig(keep=["de", "fr"])) == [
        None,
        "language",
    ]


def test_text_with_nothing_to_go_on_scores_low_and_is_rejected():
    for text in ("", "12 345 678 !!!", "hello"):
        ((code, score),) = language.identify([text])
        assert score < 0.5
        assert language.check(text, LanguageConfig()) == "language"
        assert language.check(text, LanguageConfig(keep=[code], min_score=0)) is None
    assert language.check(ENGLISH, LanguageConfig(min_score=1.0)) == "language"


def test_only_the_first_max_chars_are_judged():
    mixed = ENGLISH * 2 + " " + FRENCH * 10
    assert language.identify([mixed], max_chars=len(ENGLISH) * 2)[0][0] == "en"
    assert language.identify([mixed], max_chars=len(mixed))[0][0] == "fr"
    assert language.check(mixed, LanguageConfig(max_chars=300)) is None


def test_the_config_rejects_codes_the_model_does_not_know():
    with pytest.raises(ValidationError, match=r"unknown language code\(s\) \['english'\]"):
        LanguageConfig(keep=["english"])
    with pytest.raises(ValidationError):
        LanguageConfig(keep=[])
    with pytest.raises(ValidationError):
        LanguageConfig(min_score=1.5)
    with pytest.raises(ValidationError):
        LanguageConfig(keep=["en"], lang="en")  # type: ignore[call-arg]


def test_the_code_list_matches_the_shipped_model():
    assert set(language._identifier().labels) == language.LANGUAGES


def test_the_model_ships_in_the_package_and_loads_without_a_network(monkeypatch):
    import py3langid.langid as langid

    model = Path(langid.MODEL_DIR) / langid.MODEL_FILE
    assert model.is_file() and model.stat().st_size > 1_000_000

    def no_network(*args, **kwargs):
        raise AssertionError("language identification tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    language._identifier.cache_clear()  # load it afresh, with the network gone
    try:
        assert language.identify([ENGLISH])[0][0] == "en"
    finally:
        language._identifier.cache_clear()
