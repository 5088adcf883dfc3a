"""FreeSWITCH's own record of carrier calls (mod_cdr_csv), read as the Asterisk CDR is.  Pure.

When the controller is away the rendered dialplan answers on its own (the announcement; rxfax
for a fax number), and mod_cdr_csv still writes a row per call with the template rendered
here (:data:`TEMPLATE`). On return the controller reads the rows into the same
:class:`~backline.pbx.ports.CdrRow` the Asterisk import uses, keyed by the channel's
uuid: ``call:UUID`` is the key the driver journals a call under, and a fax goes to the fax
intake under ``fax:UUID``, so a call the controller already journaled is not recorded twice,
and a re-import is harmless.

Only rows the dialplan marked as a practice number's carrier call (``backline_route`` is
``inbound``) count: desk phones' calls and unknown numbers are not attempts.  mod_cdr_csv
(my_on_reporting) expands the template with the channel's variables as they are once the
call is over, and quotes or escapes nothing: the caller's number is untrusted and comes last,
so that nothing it holds can shift the fields before it; every other value is FreeSWITCH's
or ours.  A row that does not parse, or whose uuid is not a FreeSWITCH uuid, is skipped; a
row in the shape the template had before (:data:`FORMER_COLUMNS`) is still read as a call.

A call the controller sent to ring desk phones or to a voicemail carries the number it was
decided for (``backline_missable``, the controller's first application), and its row says
how it ended, the same variables the live path reads from ``CHANNEL_HANGUP_COMPLETE``
(backline.pbx.freeswitch.hangup): ``originate_disposition`` (``call accepted`` once a desk
phone took it) and ``voicemail_message_len`` (set by mod_voicemail only once it kept a
message, mod_voicemail.c voicemail_leave_main after deliver_vm).  So a call whose end the
controller did not hear (it was killed, or stopped) is told as an end
(:class:`~backline.core.voicemail.RecordedEnd`) for the same missed-call record
(backline.core.voicemail.missed_while_away).  A call without the mark (the PBX answered it
alone, or the controller went before its first application ran) is no end: in doubt,
nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from backline.core.voicemail import RecordedEnd
from backline.pbx.freeswitch import names
from backline.pbx.ports import RECEIVE_CONTEXT, CdrReading, CdrRow

# The channel variables of a row, in order (``${start_epoch}``, ``${end_epoch}``: whole
# seconds, UTC); the caller's number last.
COLUMNS: Final = ("uuid", "start_epoch", names.ROUTE, names.NUMBER, names.KIND, "last_app",
                  "hangup_cause", "end_epoch", names.MISSABLE, names.ORIGINATE_DISPOSITION,
                  names.VOICEMAIL_MESSAGE_LEN, "caller_id_number")
# The template's columns before the ends were recorded: rows FreeSWITCH wrote before it
# loaded the new template are still calls (and tell no end).
FORMER_COLUMNS: Final = ("uuid", "start_epoch", names.ROUTE, names.NUMBER, names.KIND,
                         "last_app", "hangup_cause", "caller_id_number")
TEMPLATE: Final = ",".join(f'"${{{column}}}"' for column in COLUMNS)
TEMPLATE_NAME: Final = "backline"
# What a carrier call that was no fax is filed under (any context but the fax ones).
VOICE_CONTEXT: Final = names.CARRIER_CONTEXT

_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH: Final = re.compile(r"[0-9]{1,12}")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,15}")
_VOICEMAIL_APP: Final = "voicemail"


def read(lines: Iterable[str]) -> CdrReading:
    """The carrier calls in mod_cdr_csv's Master.csv, its ``lines`` (an open file, read as it
    goes) in one pass, and the ends of the calls the controller sent to ring or to a
    voicemail; other and malformed rows skipped.  It tells no 911s."""
    rows: list[CdrRow] = []
    ends: list[RecordedEnd] = []
    for fields in csv.reader(lines):
        columns = {len(COLUMNS): COLUMNS, len(FORMER_COLUMNS): FORMER_COLUMNS}.get(len(fields))
        if columns is None:
            continue
        row = dict(zip(columns, fields, strict=True))
        if row[names.ROUTE] != names.INBOUND or not _UUID.fullmatch(row["uuid"]) \
                or not _EPOCH.fullmatch(row["start_epoch"]) \
                or not _NUMBER.fullmatch(row[names.NUMBER]):
            continue
        fax = row[names.KIND] == names.KIND_FAX
        start = datetime.fromtimestamp(int(row["start_epoch"]), UTC)
        rows.append(CdrRow(caller=row["caller_id_number"][:64], dialled=row[names.NUMBER],
                           context=RECEIVE_CONTEXT if fax else VOICE_CONTEXT,
                           last_app=row["last_app"][:32], start=start, uniqueid=row["uuid"]))
        if (end := _end(row, start)) is not None:
            ends.append(end)
    return CdrReading(tuple(rows), ends=tuple(ends))


def _end(row: dict[str, str], start: datetime) -> RecordedEnd | None:
    """How a call marked missable ended, as its row says; None for a call not marked."""
    number = row.get(names.MISSABLE, "")
    if not _NUMBER.fullmatch(number):
        return None
    stamp = row.get("end_epoch", "")
    end = datetime.fromtimestamp(int(stamp), UTC) if _EPOCH.fullmatch(stamp) else start
    kept = bool(row.get(names.VOICEMAIL_MESSAGE_LEN))
    # Reached the voicemail: it kept a message, or the caller's last application was it (a
    # call it did not keep one of is then checked against the messages journaled meanwhile).
    reached = kept or row["last_app"] == _VOICEMAIL_APP
    return RecordedEnd(
        uniqueid=row["uuid"], number=number, caller=row["caller_id_number"][:64], channel="",
        start=start, end=max(end, start),
        answered=row.get(names.ORIGINATE_DISPOSITION) == names.CALL_ACCEPTED,
        voicemail=reached, recording=reached, no_message=reached and not kept)


def parse(text: str) -> tuple[CdrRow, ...]:
    """The carrier calls of a record in hand (:func:`read`)."""
    return read(io.StringIO(text)).rows
