"""The PBX's own record of carrier calls (cdr_csv), turned into journal attempts.

When the controller is down the dialplan answers callers on its own; the CDR still records
each call with its uniqueid and (in userfield) the dialled practice number.  On return, every
row becomes an attempt keyed ``call:UNIQUEID`` — the same key the controller uses when it is
up — so a call the controller already journaled is not recorded twice, and a re-import is
harmless.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime

from backline.core.emergency import EmergencyCall
from backline.core.outage import Mode
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome
from backline.core.voicemail import RecordedEnd
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.ports import CdrRow

# cdr_csv's column order with loguniqueid and loguserfield (cdr_csv.c, build_csv_record).
COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
           "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
           "amaflags", "uniqueid", "userfield")


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _rows(text: str) -> Iterator[tuple[dict[str, str], datetime]]:
    """Well-formed rows of Master.csv with a uniqueid, and their start."""
    for fields in csv.reader(io.StringIO(text)):
        if len(fields) != len(COLUMNS):
            continue
        row = dict(zip(COLUMNS, fields, strict=True))
        if not row["uniqueid"]:
            continue
        try:
            start = _time(row["start"])
        except ValueError:
            continue
        yield row, start


def parse(text: str) -> Iterator[CdrRow]:
    """Rows of Master.csv that are carrier calls (userfield set); malformed rows skipped."""
    for row, start in _rows(text):
        if not row["userfield"] or row["dcontext"] == v.DESK_CONTEXT:
            continue  # not a carrier call; a desk phone's 911: see emergency_calls
        yield CdrRow(row["src"][:64], row["userfield"][:32], row["dcontext"], row["lastapp"],
                     start, row["uniqueid"])


def emergency_calls(text: str, numbers: Collection[str]) -> Iterator[EmergencyCall]:
    """The calls desk phones placed to one of the emergency ``numbers`` (their row ends in
    the desk phones' context at that number: the dialplan's 911 is Dial() alone) or blind-
    transferred a caller to (its account code names the phone), keyed as the
    PBX's event keys them, so a call told both ways is noticed once."""
    for row, start in _rows(text):
        if row["dcontext"] == v.DESK_CONTEXT and row["dst"] in numbers:
            # PJSIP/ana-desk-0000002a: the endpoint, then the channel's sequence number.
            endpoint = row["channel"].removeprefix("PJSIP/").rpartition("-")[0]
        elif row["dcontext"] == v.TRANSFER_CONTEXT and row["accountcode"] \
                and row["userfield"] and row["dst"].isdigit():
            # A caller a desk phone blind-transferred to 911: the dialplan gave the caller's
            # channel that phone's name as its account code, on that call out alone.
            endpoint = row["accountcode"]
        else:
            continue
        yield EmergencyCall(f"emergency:{row['uniqueid']}", start, endpoint[:40],
                            row["dst"][:8])


# Contexts a call ends in only after the controller decided it (backline/render/asterisk.py): such a
# row is new only if the controller stopped between sending the decision and journaling the
# call (normal-mode calls are journaled just after their decision, off the caller's path).
_DECIDED = {"backline-ring": Outcome.RANG, "backline-voicemail": Outcome.VOICEMAIL,
            "backline-unknown": Outcome.REFUSED, "backline-forward": Outcome.FORWARDED}


def attempt_for(row: CdrRow, mode_at: Callable[[datetime], Mode]) -> NewAttempt:
    """The attempt a CDR row stands for.  Only rows the controller missed become new."""
    fax = row.context == "backline-fax"
    mode = mode_at(row.start)
    decided = _DECIDED.get(row.context)
    if decided is not None:
        held = mode is Mode.OUTAGE and decided is not Outcome.REFUSED
        return NewAttempt(
            key=f"call:{row.uniqueid}", at=row.start, kind=AttemptKind.CALL, mode=mode,
            sender=row.caller, recipient=row.dialled, outcome=decided,
            detail="decided by the controller; journaled from the PBX's record",
            delivery=Delivery.HELD if held else Delivery.NOT_NEEDED)
    return NewAttempt(
        key=f"call:{row.uniqueid}", at=row.start,
        kind=AttemptKind.FAX if fax else AttemptKind.CALL, mode=mode,
        sender=row.caller, recipient=row.dialled,
        outcome=Outcome.RECEIVED if fax else Outcome.ANNOUNCED,
        detail="answered by the PBX while the controller was away",
        delivery=Delivery.HELD)


# Where the caller still was when a call in the voicemail context ended before app_voicemail
# could record anything (backline.render.asterisk_dialplan: Answer, the greeting's Playback).
# Any other last application, VoiceMail first, may have left a message.
_BEFORE_RECORDING = frozenset({"Answer", "Playback"})


def unanswered_ends(text: str) -> Iterator[RecordedEnd]:
    """How each call that rang desk phones or reached a voicemail ended, as its rows say
    (cdr_csv writes a row per desk phone dialled, and one more when the caller goes on to
    the voicemail, all under the caller's uniqueid), for the controller to tell a missed call
    it did not hear (backline.core.voicemail.missed_while_away)."""
    ring, voicemail = v.context(v.RING), v.context(v.VOICEMAIL)
    calls: dict[str, list[tuple[dict[str, str], datetime]]] = {}
    for row, start in _rows(text):
        calls.setdefault(row["uniqueid"], []).append((row, start))
    for uniqueid, rows in calls.items():
        ended = [(r, s) for r, s in rows if r["dcontext"] == voicemail] or \
            [(r, s) for r, s in rows if r["dcontext"] == ring]
        if not ended:
            continue
        row, start = ended[-1]
        try:
            end = max(_time(row["end"]), start)
        except ValueError:
            end = start
        yield RecordedEnd(
            uniqueid=uniqueid[:64], number=row["userfield"][:32], caller=row["src"][:64],
            channel=row["channel"][:80], start=start, end=end,
            answered=any(r["disposition"] == "ANSWERED" for r, _ in rows
                         if r["dcontext"] != voicemail),
            voicemail=row["dcontext"] == voicemail,
            recording=row["lastapp"] not in _BEFORE_RECORDING)
