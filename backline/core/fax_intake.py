"""Fax intake, the pure part: how a fax call ended, what was stored, and what is journaled.

No I/O and no clock: the PBX's report, the storage result and the time are arguments.  The
shell (``backline.pbx.fax_desk``) moves the TIFF into the fax directory, converts it,
verifies the PDF, and then asks :func:`fax_attempt` for the one record of the fax.

Everything the PBX reports about a fax is untrusted except the names it generates itself:
the station ID is whatever the sending machine says, so it is decoded, reduced to printable
text and cut to T.30's 20 characters; the error (a token of res_fax's, or spandsp's prose,
"The call dropped prematurely") likewise; the status must be one res_fax sets.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import assert_never

from backline.core import e164
from backline.core.outage import Mode
from backline.core.records import Attempt, AttemptKind, Delivery, NewAttempt, Outcome

# Asterisk's channel uniqueid: [systemname-]EPOCH.SEQUENCE, or FreeSWITCH's channel UUID.
# Only such a name becomes part of a file name, so a report can never point the controller
# at another file.
_UNIQUEID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,31}-)?[0-9]{1,12}\.[0-9]{1,9}"
                       r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PAGES = re.compile(r"[0-9]{1,4}")
STATION_ID_CHARS = 20  # T.30 limits the TSI to 20 characters
ERROR_CHARS = 80
DETAIL_CHARS = 400
# A fax page is tens of kilobytes; a fax directory with less room than this is full.
MIN_FREE_BYTES = 64 * 1024 * 1024


class BadFaxReport(ValueError):
    """A fax report whose call id is not one Asterisk generates: nothing is looked up."""


class FaxStatus(enum.Enum):
    """``FAXSTATUS`` after ReceiveFax."""

    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    UNKNOWN = ""  # ReceiveFax never ran, or the PBX received alone (the CDR says nothing)


@dataclass(frozen=True, slots=True)
class FaxEnd:
    """How one fax call ended.  ``pages`` is None when the PBX did not report a count."""

    uniqueid: str
    sender: str
    dialed: str
    status: FaxStatus = FaxStatus.UNKNOWN
    pages: int | None = None
    station_id: str = ""
    error: str = ""


def check_uniqueid(uniqueid: str) -> str:
    """Return ``uniqueid`` if it is a PBX's call id; raise BadFaxReport."""
    if not _UNIQUEID.fullmatch(uniqueid):
        raise BadFaxReport(f"not a PBX call id: {uniqueid[:40]!r}")
    return uniqueid


def fax_key(uniqueid: str) -> str:
    """The journal key of the fax on call ``uniqueid``: one record per fax, however often
    it is reported (the h extension, the CDR import after a restart)."""
    return f"fax:{check_uniqueid(uniqueid)}"


def stored_names(uniqueid: str) -> tuple[str, str]:
    """The TIFF's and the PDF's names in the fax directory, side by side."""
    stem = f"fax-{check_uniqueid(uniqueid)}"
    return f"{stem}.tif", f"{stem}.pdf"


def reported_text(raw: str, limit: int) -> str:
    """A URI-encoded value from the PBX as printable text, spaces collapsed, ``limit`` at most."""
    decoded = urllib.parse.unquote(raw[:4 * limit], errors="replace")
    printable = "".join(ch if ch.isprintable() else " " for ch in decoded)
    return " ".join(printable.split())[:limit]


def fax_end_from_args(uniqueid: str, caller: str, args: Sequence[str]) -> FaxEnd:
    """The ``/faxdone`` report: args are the dialled number, FAXSTATUS, FAXPAGES, and the
    URI-encoded FAXERROR and REMOTESTATIONID, in that order; missing ones are empty.

    Raises BadFaxReport for a call id Asterisk would not generate.  Anything else that is
    not what res_fax sets is read as unknown rather than refused: the fax still counts.
    """
    dialed, status, pages, error, station = [*args, "", "", "", "", ""][:5]
    try:
        fax_status = FaxStatus(status)
    except ValueError:
        fax_status = FaxStatus.UNKNOWN
    return FaxEnd(
        uniqueid=check_uniqueid(uniqueid),
        sender=caller[:64],
        dialed="".join(ch for ch in dialed if ch in "+0123456789")[:32],
        status=fax_status,
        pages=int(pages) if _PAGES.fullmatch(pages) else None,
        station_id=reported_text(station, STATION_ID_CHARS),
        error=reported_text(error, ERROR_CHARS),
    )


def recipient(dialed: str) -> str:
    """The practice number as E.164 if it is one, else as dialled."""
    try:
        return e164.normalise(dialed)
    except e164.NotE164:
        return dialed[:32]


# -- what was stored ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Converted:
    """A PDF beside the TIFF, read back and verified."""

    pdf: str
    pages: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unreadable:
    """The TIFF is in the fax directory as it came, but no verified PDF could be made."""

    tiff: str
    reason: str


@dataclass(frozen=True, slots=True)
class NotStored:
    """The TIFF could not be moved into the fax directory; it stays where the PBX wrote it."""

    where: str
    reason: str


@dataclass(frozen=True, slots=True)
class NothingReceived:
    """No TIFF at all: the call ended before a page came."""


Stored = Converted | Unreadable | NotStored | NothingReceived


@dataclass(frozen=True, slots=True)
class StorageCheck:
    """Whether the fax directory can take a fax now; ``reason`` says why not."""

    ok: bool
    reason: str = ""


def storage_verdict(free_bytes: int | None, problem: str | None,
                    min_free: int = MIN_FREE_BYTES) -> StorageCheck:
    """A fax directory that failed a write (``problem``) or has less than ``min_free`` bytes
    free cannot take a fax: the call is refused before it is answered."""
    if problem is not None:
        return StorageCheck(False, f"not writable: {problem}")
    if free_bytes is None or free_bytes < min_free:
        free = "unknown" if free_bytes is None else f"{free_bytes // (1024 * 1024)} MiB"
        return StorageCheck(False, f"full: {free} free, {min_free // (1024 * 1024)} MiB needed")
    return StorageCheck(True)


# -- the journal record --------------------------------------------------------------------


def fax_attempt(end: FaxEnd, stored: Stored, *, at: datetime, mode: Mode,
                by_pbx_alone: bool = False) -> NewAttempt:
    """The one journal record of a fax.  Received in an outage, it is held for the inbox."""
    notes: list[str] = []
    match stored:
        case Converted():
            outcome, file = Outcome.RECEIVED, stored.pdf
            notes.append(f"{stored.pages} page{'s' if stored.pages != 1 else ''}")
            if end.pages is not None and end.pages != stored.pages:
                notes.append(f"the PBX counted {end.pages}")
            notes.extend(stored.notes)
        case Unreadable():
            outcome, file = Outcome.UNREADABLE, stored.tiff
            notes.append(f"no PDF: {stored.reason}; the TIFF is kept as received")
        case NotStored():
            outcome, file = Outcome.UNREADABLE, stored.where
            notes.append(f"not moved into the fax directory ({stored.reason}); "
                         "left where the PBX wrote it")
        case NothingReceived():
            outcome, file = Outcome.UNREADABLE, ""
            notes.append("no page received")
        case _:
            assert_never(stored)
    if end.station_id:
        notes.append(f"station {end.station_id}")
    if end.status is FaxStatus.FAILED:
        notes.append(f"the transmission failed ({end.error or 'no reason given'})")
    if by_pbx_alone:
        notes.append("received by the PBX while the controller was away")
    return NewAttempt(
        key=fax_key(end.uniqueid), at=at, kind=AttemptKind.FAX, mode=mode,
        sender=end.sender[:64], recipient=recipient(end.dialed), outcome=outcome, file=file,
        detail="; ".join(notes)[:DETAIL_CHARS],
        delivery=Delivery.HELD if mode is Mode.OUTAGE else Delivery.NOT_NEEDED)


def taken_in_late(known: Attempt, uniqueid: str, stored: Stored) -> NewAttempt:
    """The corrected record of a fax first journaled without its pages, which had stayed in
    the PBX's spool (storage failed during the call, or the spool was looked for elsewhere),
    once they were taken in: what :func:`fax_attempt` says now, and what was said first."""
    fresh = fax_attempt(FaxEnd(uniqueid, known.sender, known.recipient), stored, at=known.at,
                        mode=known.mode)
    detail = f"{fresh.detail}; taken from the PBX's spool later (first: {known.detail})"
    return dataclasses.replace(fresh, detail=detail[:DETAIL_CHARS])


def rejected_by_pbx(uniqueid: str, sender: str, dialed: str, *, at: datetime,
                    mode: Mode) -> NewAttempt:
    """A fax the PBX refused on its own (the controller was away when fax tones were heard
    on a number that does not carry fax), found in its CDR."""
    return NewAttempt(
        key=fax_key(uniqueid), at=at, kind=AttemptKind.FAX, mode=mode, sender=sender[:64],
        recipient=recipient(dialed), outcome=Outcome.REJECTED,
        detail="refused by the PBX while the controller was away",
        delivery=Delivery.HELD if mode is Mode.OUTAGE else Delivery.NOT_NEEDED)
