"""What a desk phone dials besides an outside number: a colleague's or a team's extension,
the feature codes, and the prefix that picks the practice number to call out from."""

from __future__ import annotations

from collections.abc import Iterable

from backline.core import e164
from backline.core.decisions import OutboundCall

CHOOSE_NUMBER_PREFIX = "*7"
VOICEMAIL_CODE = "*97"


def dialled(desk_phone: str, digits: str) -> OutboundCall:
    """What a desk phone dialled: ``DEST``, or ``*7`` + a 10-digit practice number + ``DEST``
    to call out from that number (a phone has no other way to pick a caller ID)."""
    if digits.startswith(CHOOSE_NUMBER_PREFIX) and len(digits) > 12 and digits[2:12].isdigit():
        return OutboundCall(desk_phone, digits[12:], "+1" + digits[2:12])
    return OutboundCall(desk_phone, digits)


# What a desk phone dials to reach a colleague or a team (the config checks the same shape:
# backline/app/settings/people.py).
EXTENSION_DIGITS = "[1-9][0-9]{1,5}"
# What else a desk phone dials that is not an outside number: the outage switch, the hours
# override (*26 closed, *27 open), voicemail, and the prefix that picks the number to call out from.
FEATURE_CODES = ("*28", "*29", "*26", "*27", VOICEMAIL_CODE, CHOOSE_NUMBER_PREFIX)


def extension_clash(extension: str, emergency_numbers: Iterable[str],
                    numbers: Iterable[str]) -> str | None:
    """What dialling ``extension`` would reach instead of its owner, or None: an emergency
    number (which always goes out first), a feature code, or a practice number as a desk
    phone may dial it (``numbers`` are E.164: +1NXXNXXXXXX, 1NXXNXXXXXX, NXXNXXXXXX)."""
    if extension in emergency_numbers:
        return f"the emergency number {extension}"
    for code in FEATURE_CODES:
        if extension.startswith(code) or code.startswith(extension):
            return f"the feature code {code}"
    for number in numbers:
        digits = number.lstrip("+")
        if extension in (number, digits, digits[1:] if number.startswith("+1") else digits):
            return f"the practice number {number}"
    try:
        return f"the outside number {e164.normalise(extension)}"
    except e164.NotE164:
        return None
