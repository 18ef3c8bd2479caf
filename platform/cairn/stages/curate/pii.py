"""Replacing personal data in text with typed placeholders, and counting what was replaced.

A model trained on web text can repeat the email addresses and phone numbers it saw; replacing
them with <EMAIL>, <PHONE>, <IP_ADDRESS>, <CREDIT_CARD> and <SSN> before training keeps the
shape of the text (the model still learns that an address goes after "write to") without the
person. The counts let a dataset report say how much was scrubbed.

Everything is a precompiled regex, some followed by a check a regex cannot do (Luhn for cards,
`ipaddress` for IPv6, a digit count for phones). Regexes miss things a trained recogniser would
catch (names, street addresses, "john at example dot com") and are not attempted here. The
patterns lean towards precision on the digits that fill ordinary prose — years, dates, verse
and line numbers, version strings, prices — at the cost of recall:

- phones need a leading "+" and country code, or the US 3-3-4 grouping with separators
  ("(555) 123-4567", "555-123-4567", "555.123.4567"); ten bare digits are left alone, as they
  are as often an order or account number.
- cards need 13-19 digits (single spaces or dashes allowed between them), a first digit of 2-6
  (the networks' ranges) and a valid Luhn check digit; one random number in ten passes Luhn, so
  a long numeric id that starts with 2-6 is sometimes scrubbed.
- SSNs need the dashed ddd-dd-dddd form and skip the never-issued areas 000, 666 and 9xx.
- IPv4 accepts only octets 0-255, and not when the address is part of a longer dotted number.

Scrubbing runs in a fixed order (emails, cards, SSNs, IPv6, IPv4, phones) so that a match
already replaced cannot be matched again as a shorter type.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

PLACEHOLDERS: dict[str, str] = {
    "email": "<EMAIL>",
    "credit_card": "<CREDIT_CARD>",
    "ssn": "<SSN>",
    "ip_address": "<IP_ADDRESS>",
    "phone": "<PHONE>",
}

# A domain needs a dot and a 2+ letter top-level part, so "a@b" and "@handle" stay.
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)
_CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not after a digit or a dot, nor before a digit or a dot-and-digit: "1.2.3.4.5" is no address.
_IPV4 = re.compile(rf"(?<![\d.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\d|\.\d)")
# Candidates only; ipaddress decides, which keeps times like 12:30:45 and C++'s a::b out.
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE_INTERNATIONAL = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,4}){2,5}(?![\d-])"
)
_PHONE_US = re.compile(r"(?<![\w+(-])(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\d-])")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits ends in a valid Luhn check digit (as payment cards do)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _is_ipv6(match: str) -> bool:
    if not any(c not in ":" for c in match):  # "::" alone is valid but is punctuation in text
        return False
    try:
        ipaddress.IPv6Address(match)
    except ValueError:
        return False
    return True


def _is_international_phone(match: str) -> bool:
    # E.164 allows at most 15 digits; fewer than 8 is more likely arithmetic than a number.
    return 8 <= sum(c.isdigit() for c in match) <= 15


_RULES: tuple[tuple[str, re.Pattern[str], Callable[[str], bool] | None], ...] = (
    ("email", _EMAIL, None),
    ("credit_card", _CARD, _is_card),
    ("ssn", _SSN, None),
    ("ip_address", _IPV6, _is_ipv6),
    ("ip_address", _IPV4, None),
    ("phone", _PHONE_INTERNATIONAL, _is_international_phone),
    ("phone", _PHONE_US, None),
)


def scrub(text: str) -> tuple[str, dict[str, int]]:
    """The text with personal data replaced by placeholders, and how many of each type.

    Counts are keyed by the names in `PLACEHOLDERS`; types not found are left out.
    """
    counts: dict[str, int] = {}
    for kind, pattern, valid in _RULES:
        placeholder = PLACEHOLDERS[kind]

        def replace(
            m: re.Match[str],
            kind: str = kind,
            placeholder: str = placeholder,
            valid: Callable[[str], bool] | None = valid,
        ) -> str:
            if valid is not None and not valid(m.group()):
                return m.group()
            counts[kind] = counts.get(kind, 0) + 1
            return placeholder

        text = pattern.sub(replace, text)
    return text, counts
