"""The PBX's own record of carrier calls (cdr_csv), turned into journal attempts.

When the controller is down the dialplan answers callers on its own; the CDR still records
each call with its uniqueid and (in userfield) the dialled practice number.  On return, every
row becomes an attempt keyed ``call:UNIQUEID`` — the same key the controller uses when it is
up — so a call the controller already journaled is not recorded twice, and a re-import is
harmless.

The record is read in one pass (:func:`read`): a year of it is megabytes, so it is read line by
line and each row handed to the three readers below, which keep only what they find.

cdr_csv (cdr_csv.c, append_string) quotes every value and doubles a quote in it, and escapes
nothing else: a line break (a %0A in a Request-URI's user part reaches EXTEN, pjsip decodes
it) is written as it is, inside its quoted value, so a row may span lines; the caller's
number is filtered by the dialplan before any row is written
(backline.render.asterisk_dialplan).  A row is never longer than cdr_csv's buffer
(:data:`ROW_LIMIT`): a quote still open past it is a torn row (a write cut short), which costs
its own line, never the rows after it (:func:`_records`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from backline.core.emergency import EmergencyCall
from backline.core.outage import Mode
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome
from backline.core.voicemail import RecordedEnd
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.ports import CdrReading, CdrRow

# cdr_csv's column order with loguniqueid and loguserfield (cdr_csv.c, build_csv_record).
COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
           "lastdata", "start", "answer", "end", "duration", "billsec", "disposition",
           "amaflags", "uniqueid", "userfield")


# csv_log's buffer: cdr_csv writes no row longer (build_csv_record drops it whole).
ROW_LIMIT = 1024


def _fields(record: list[str]) -> list[str] | None:
    """A record's values if it is one of cdr_csv's rows (:data:`COLUMNS`), else None."""
    try:
        fields = next(csv.reader(record), [])
    except csv.Error:
        return None
    return fields if len(fields) == len(COLUMNS) else None


def _records(lines: Iterable[str]) -> Iterator[list[str] | None]:
    """The values of each row cdr_csv wrote, read across lines only while a quote is open;
    None for each line that is no row.  A record spanning lines that is no row, or a quote
    still open past :data:`ROW_LIMIT` or at the end, is torn at its first line: that line is
    None and the lines after it are read again."""
    source, todo = iter(lines), deque[str]()
    record: list[str] = []
    size = quotes = 0
    while True:
        line = todo.popleft() if todo else next(source, None)
        if line is None and not record:
            return
        if line is not None:
            record.append(line)
            size, quotes = size + len(line), quotes + line.count('"')
            if quotes % 2 and size <= ROW_LIMIT:
                continue  # a quoted value goes on into the next line
        fields = None if quotes % 2 else _fields(record)
        if fields is not None or len(record) == 1:
            if fields is not None or record[0].strip():
                yield fields
        else:  # torn: its first line, then the lines after it read again
            yield None
            todo.extendleft(reversed(record[1:]))
        record, size, quotes = [], 0, 0


def _time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def _rows(lines: Iterable[str], torn: list[int]) -> Iterator[tuple[dict[str, str], datetime]]:
    """Well-formed rows of Master.csv with a uniqueid, and their start; ``userfield`` the
    dialled number alone, what the dialplan marked after it in ``mark``.  ``torn`` counts
    what was no row (its one item)."""
    for fields in _records(lines):
        if fields is None:
            torn[0] += 1
            continue
        row = dict(zip(COLUMNS, fields, strict=True))
        row["userfield"], _, row["mark"] = row["userfield"].partition(
            v.USERFIELD_SEPARATOR)
        if not row["uniqueid"]:
            continue
        try:
            start = _time(row["start"])
        except ValueError:
            continue
        yield row, start


def read(lines: Iterable[str], numbers: Collection[str]) -> CdrReading:
    """Master.csv's ``lines`` (an open file, read as it goes) in one pass: its carrier calls,
    the 911s to the emergency ``numbers`` and the ends of calls that rang desk phones or
    reached a voicemail; malformed rows skipped."""
    rows: list[CdrRow] = []
    emergencies: list[EmergencyCall] = []
    ends = _Ends()
    torn = [0]
    for row, start in _rows(lines, torn):
        if (call := _carrier_call(row, start)) is not None:
            rows.append(call)
        if (emergency := _emergency_call(row, start, numbers)) is not None:
            emergencies.append(emergency)
        ends.feed(row, start)
    return CdrReading(tuple(rows), tuple(emergencies), ends.told(), skipped=torn[0])


def parse(text: str) -> tuple[CdrRow, ...]:
    """The carrier calls of a record in hand (:func:`read`)."""
    return read(io.StringIO(text), ()).rows


def emergency_calls(text: str, numbers: Collection[str]) -> tuple[EmergencyCall, ...]:
    """The 911s of a record in hand (:func:`read`)."""
    return read(io.StringIO(text), numbers).emergencies


def unanswered_ends(text: str) -> tuple[RecordedEnd, ...]:
    """The ends of a record in hand (:func:`read`)."""
    return read(io.StringIO(text), ()).ends


def _carrier_call(row: dict[str, str], start: datetime) -> CdrRow | None:
    """A row that is a carrier call (userfield set)."""
    if not row["userfield"] or row["dcontext"] == v.DESK_CONTEXT:
        return None  # not a carrier call; a desk phone's 911: see _emergency_call
    return CdrRow(row["src"][:64], row["userfield"][:32], row["dcontext"], row["lastapp"],
                  start, row["uniqueid"])


def _emergency_call(row: dict[str, str], start: datetime,
                    numbers: Collection[str]) -> EmergencyCall | None:
    """A call a desk phone placed to one of the emergency ``numbers`` (its row ends in the
    desk phones' context at that number: the dialplan's 911 is Dial() alone) or blind-
    transferred a caller to (its account code names the phone), keyed as the
    PBX's event keys them, so a call told both ways is noticed once."""
    if row["dcontext"] == v.DESK_CONTEXT and row["dst"] in numbers:
        # PJSIP/ana-desk-0000002a: the endpoint, then the channel's sequence number.
        endpoint = row["channel"].removeprefix("PJSIP/").rpartition("-")[0]
    elif row["dcontext"] == v.TRANSFER_CONTEXT and row["accountcode"] \
            and row["userfield"] and row["dst"].isdigit():
        # A caller a desk phone blind-transferred to 911: the dialplan gave the caller's
        # channel that phone's name as its account code, on that call out alone.
        endpoint = row["accountcode"]
    else:
        return None
    return EmergencyCall(f"emergency:{row['uniqueid']}", start, endpoint[:40],
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


_RING, _VOICEMAIL = v.context(v.RING), v.context(v.VOICEMAIL)


@dataclass(slots=True)
class _Call:
    """What the rows so far say of one carrier call: whether a desk phone took it, and the
    last row in which it rang desk phones and the last in which it reached a voicemail."""

    answered: bool = False
    rang: RecordedEnd | None = None
    voicemail: RecordedEnd | None = None


class _Ends:
    """How each call that rang desk phones or reached a voicemail ended, as its rows say
    (cdr_csv writes a row per desk phone dialled, and one more when the caller goes on to
    the voicemail, all under the caller's uniqueid), for the controller to tell a missed call
    it did not hear (backline.core.voicemail.missed_while_away).

    Fed row by row, it keeps a little for each carrier call and nothing of the rest: every
    row of a carrier call has the userfield (the carrier context sets it before anything
    rings or records, backline.render.asterisk_dialplan), and a row without one names no
    number a missed call could be journaled on."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    def feed(self, row: dict[str, str], start: datetime) -> None:
        if not row["userfield"]:
            return
        call = self._calls.setdefault(row["uniqueid"], _Call())
        context = row["dcontext"]
        if context != _VOICEMAIL and row["disposition"] == "ANSWERED":
            call.answered = True
        if context not in (_RING, _VOICEMAIL):
            return
        try:
            end = max(_time(row["end"]), start)
        except ValueError:
            end = start
        told = RecordedEnd(
            uniqueid=row["uniqueid"][:64], number=row["userfield"][:32],
            caller=row["src"][:64], channel=row["channel"][:80], start=start, end=end,
            answered=False, voicemail=context == _VOICEMAIL,
            recording=row["lastapp"] not in _BEFORE_RECORDING,
            no_message=context == _VOICEMAIL and row["mark"] == v.NO_MESSAGE)
        if context == _VOICEMAIL:
            call.voicemail = told
        else:
            call.rang = told

    def told(self) -> tuple[RecordedEnd, ...]:
        """Each call's end: its last row in a voicemail, else its last ringing desk phones."""
        return tuple(dataclasses.replace(ended, answered=call.answered)
                     for call in self._calls.values()
                     if (ended := call.voicemail or call.rang) is not None)
