"""Language identification for curate's `language` filter.

The model is py3langid's (a maintained fork of langid.py: a byte n-gram naive Bayes classifier
over 140 languages). It ships inside the PyPI package as `py3langid/data/model.npz.xz` and is
loaded from there with `lzma` + `numpy.load(allow_pickle=False)`; nothing is downloaded, ever
(the package's only network code is its command-line `--url` option, which we do not use). It is
loaded once per process, on first use (~0.5 s), so Ray Data workers each pay that once.

Scores are py3langid's normalised probabilities (`norm_probs=True`: a softmax over the languages,
tempered by the square root of the text's length in bytes so that long and short texts are
comparable). A text with nothing to go on (digits, punctuation, a single word) gets a low score
for whatever language wins, and `min_score` rejects it.

Measured on a 2-core development machine, one process: 1,500-2,900 documents/s on 200-word
(~1,360-character) English documents when the machine was otherwise idle, 550-1,300 while it
was busy. The cost is ~0.4-0.6 µs per byte (a Python loop over the text's bytes), which is why
only the first `max_chars` characters of a document are looked at.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

FILTER = "language"  # the filter name a rejected document is counted under

# The codes py3langid 0.4's model can return (ISO 639-1 where one exists, else 639-3; `zxx`:
# no linguistic content). Kept here so a config is validated without loading the model; a test
# checks it against the model.
_CODES = (
    "ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu "
    "ext fa fi fo fr fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig "
    "is it ja jv ka kab kik kk km kn ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt "
    "my ne nl nn no nso oc om or pa pcm pl ps pt qu ro ru rw sa sdh se si sk sl sn so sq sr st "
    "sv sw ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa wuu xh yo yue zh zu zxx"
)
LANGUAGES = frozenset(_CODES.split())


class LanguageConfig(BaseModel):
    """Which languages curate keeps, and how sure the identifier must be."""

    model_config = ConfigDict(extra="forbid")

    keep: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="language codes to keep (ISO 639-1 such as en, fr, de, zh; a few languages "
        "without one use ISO 639-3 such as ary, yue); a document identified as any other "
        "language is removed and counted under the filter `language`",
    )
    min_score: float = Field(
        0.5,
        ge=0,
        le=1,
        description="the least probability the identifier must give the document's language "
        "for it to be kept (0-1). Ordinary prose of a sentence or more scores above 0.9; "
        "a few words, code, tables or lists of numbers score low and are removed. Lower it to "
        "keep short or mixed documents, raise it for a cleaner single-language corpus",
    )
    max_chars: int = Field(
        2000,
        ge=100,
        description="how many characters from the start of each document are looked at: "
        "identification costs time in proportion to length, and a document rarely changes "
        "language after its first paragraphs",
    )

    @field_validator("keep")
    @classmethod
    def _known_codes(cls, keep: list[str]) -> list[str]:
        unknown = [code for code in keep if code not in LANGUAGES]
        if unknown:
            raise ValueError(
                f"unknown language code(s) {unknown}: the identifier knows "
                f"{', '.join(sorted(LANGUAGES))}"
            )
        return keep


@functools.cache
def _identifier() -> Any:
    # Imported here so that importing curate's config (which every workflow validation does)
    # does not load numpy and the model.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify(texts: list[str], max_chars: int = 2000) -> list[tuple[str, float]]:
    """(language code, probability) of each text, judged on its first `max_chars` characters."""
    ident = _identifier()
    out = []
    for text in texts:
        code, score = ident.classify(text[:max_chars])
        out.append((str(code), float(score)))
    return out


def check(text: str, cfg: LanguageConfig) -> str | None:
    """`"language"` when the text is not in a kept language with at least `min_score`, else None."""
    return check_batch([text], cfg)[0]


def check_batch(texts: list[str], cfg: LanguageConfig) -> list[str | None]:
    """`check` for many texts at once (one call per Ray Data batch)."""
    keep = set(cfg.keep)
    return [
        None if code in keep and score >= cfg.min_score else FILTER
        for code, score in identify(texts, cfg.max_chars)
    ]
