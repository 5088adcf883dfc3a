"""The line stamped on every PDF page: when the fax came, from whom, to which number, which page.

Sender, destination and station ID come from the caller ID and the remote fax machine (T.30 TSI),
so they are untrusted. They are reduced to short, printable text in the PDF font's own character
set (WinAnsi): no control or invisible characters (line breaks, bidi overrides), nothing the font
would have to substitute. Escaping for PDF syntax is `fax.pdfwrite.pdf_string`'s job.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime

from backline.fax.pdfwrite import FONT_ENCODING

# T.30 limits a TSI to 20 characters; caller ID names and numbers are short too. The bounds keep
# a hostile value from pushing the page number off the line.
STATION_ID_CHARS = 20
PARTY_CHARS = 40


@dataclass(frozen=True)
class FaxHeader:
    """What the practice needs to see on each page. `received_at` must carry its time zone."""

    received_at: datetime
    sender: str
    destination: str
    station_id: str

    def __post_init__(self) -> None:
        # A naive time in a medical record is ambiguous twice a year; refuse it at the boundary.
        if self.received_at.utcoffset() is None:
            raise ValueError("received_at must be time-zone aware")


def clean_text(text: str, limit: int) -> str:
    """Return `text` as at most `limit` printable WinAnsi characters, '?' for the rest.

    Control, format and private-use characters become spaces (so "a\\nb" stays two words), runs
    of spaces collapse, and a cut is marked with '...'. Empty input gives 'unknown'.
    """
    normalised = unicodedata.normalize("NFKC", text)
    printable = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in normalised)
    words = " ".join(printable.split())
    shown = words.encode(FONT_ENCODING, "replace").decode(FONT_ENCODING)
    if len(shown) > limit:
        shown = shown[: limit - 3].rstrip() + "..."
    return shown or "unknown"


def header_text(header: FaxHeader) -> str:
    """Return the header's text, the same on every page (the page number goes beside it)."""
    when = header.received_at.isoformat(sep=" ", timespec="minutes")
    sender = clean_text(header.sender, PARTY_CHARS)
    station = clean_text(header.station_id, STATION_ID_CHARS)
    destination = clean_text(header.destination, PARTY_CHARS)
    return f"Received {when}   From {sender} (station {station})   To {destination}"
