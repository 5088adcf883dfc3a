"""E.164 normalisation, so that one number written three ways is recognised as one number.

Practices write numbers as ``(720) 555-0141``, ``720-555-0141`` or ``+1 720 555 0141``; the
directory keys everything by the canonical ``+17205550141``.  Ten-digit numbers without a
country code are taken as North American (the product's market); anything else must carry
``+`` and a country code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEPARATORS = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"\+[1-9]\d{7,14}")
_NANP = re.compile(r"\+1[2-9]\d{2}[2-9]\d{6}")


class NotE164(ValueError):
    """The text is not a phone number we can normalise; ``why`` says what was expected."""

    def __init__(self, text: str, why: str) -> None:
        super().__init__(f"{text!r}: {why}")
        self.text = text
        self.why = why


def normalise(text: str) -> str:
    """Return the canonical E.164 form of ``text`` or raise :class:`NotE164`."""
    compact = _SEPARATORS.sub("", text.strip())
    if not compact.startswith("+"):
        if re.fullmatch(r"1?\d{10}", compact):
            compact = "+1" + compact[-10:]
        else:
            raise NotE164(text, "an E.164 number like +13125550100 (or a 10-digit US number)")
    if not _E164.fullmatch(compact):
        raise NotE164(text, "an E.164 number: '+', a country code and up to 15 digits in all")
    if compact.startswith("+1") and not _NANP.fullmatch(compact):
        raise NotE164(text, "a North American number: +1, then a 3-digit area code and "
                      "7-digit number, neither starting with 0 or 1")
    return compact


@dataclass(frozen=True, slots=True)
class OutsideNumber:
    """An outside party's number as Backline files it, and as the carrier or gateway sent it.

    ``number`` is canonical E.164 when the text is one in some spelling (``+1 720 555 0141``,
    or North American 10 or 11 digits: ``7205550141``, ``17205550141``), so one caller is one
    conversation however the carrier spelt them that day; anything else (``anonymous``, a
    short code, an international number without ``+``, which no plan here resolves) is kept
    as it came.  ``raw`` is always the text as it came."""

    number: str
    raw: str


def outside(text: str) -> OutsideNumber:
    """``text`` (untrusted: a caller ID, an SMS sender) as an :class:`OutsideNumber`."""
    try:
        return OutsideNumber(normalise(text), text)
    except NotE164:
        return OutsideNumber(text, text)


def is_e164(text: str) -> bool:
    """True when ``text`` is already canonical E.164."""
    return bool(_E164.fullmatch(text))


def redact(number: str) -> str:
    """Keep only the last two digits: enough for ops to correlate, too little to identify."""
    digits = re.sub(r"\D", "", number)
    return "…" + digits[-2:] if len(digits) > 2 else "…"
