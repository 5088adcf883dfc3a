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
call is over, and quotes or escapes nothing (switch_channel_expand_variables).  The caller's
number is untrusted and sofia lets a quote, a comma and a line break into it (mod_sofia.h,
check_decode, URL-decodes the From's user part; switch_caller.h, profile_dup_clean, keeps
\n and \r): so it comes last, after every value that is FreeSWITCH's or ours, and the
record is read a line at a time, never a quoted field across lines, so one caller's row
costs at most itself.  Each row starts with the install's row token (:func:`template`,
generated at render and kept in the secrets file), which no caller knows: a line a caller
wrote (after a line break in their number) does not start with it and is skipped, counted,
never read.  A row that does not parse, or whose uuid is not a FreeSWITCH uuid, is skipped;
a row in the shape the released template had before (:data:`FORMER_COLUMNS`, 8 columns
without the token) is still read as a call, never as an end, and only before the first row
with a token: once FreeSWITCH writes the token, an untokened line can only be a caller's.

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
TEMPLATE_NAME: Final = "backline"
# The secrets file's key for the install's row token, and what the token's column starts with
# (a line starting so is of the tokened template, right token or not).
TOKEN_KEY: Final = "cdr-csv:row-token"
ROW_MARK: Final = "backline-row:"
TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{16,64}")
# What a carrier call that was no fax is filed under (any context but the fax ones).
VOICE_CONTEXT: Final = names.CARRIER_CONTEXT

# A line of the tokened template, with any install's token.
_OTHER_TOKEN: Final = re.compile(rf'"{ROW_MARK}{TOKEN.pattern}","')
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH: Final = re.compile(r"[0-9]{1,12}")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,15}")
_VOICEMAIL_APP: Final = "voicemail"


def template(token: str) -> str:
    """The row mod_cdr_csv writes: the install's ``token`` first, then :data:`COLUMNS`."""
    if not TOKEN.fullmatch(token):
        raise ValueError("the call record's row token must be 16 to 64 URL-safe characters")
    return ",".join([f'"{ROW_MARK}{token}"', *(f'"${{{column}}}"' for column in COLUMNS)])


def _fields(line: str, token: str, tokened: bool) -> tuple[dict[str, str] | None, bool]:
    """One line's row, and whether it came from the tokened template: a line with the
    ``token`` split at its fixed columns (:data:`COLUMNS`), the caller's number whatever is
    left before the closing quote; an untokened line read as CSV in the former shape only
    (:data:`FORMER_COLUMNS`) and only before the first tokened one; None for any other
    line."""
    if line.startswith(f'"{ROW_MARK}'):
        head = f'"{ROW_MARK}{token}","'
        if not token or not line.startswith(head) or not line.endswith('"') \
                or len(line) <= len(head) or f'"{ROW_MARK}' in line[1:]:
            return None, True  # another's token, cut short, or a torn row with one after it
        fields = line[len(head):-1].split('","', len(COLUMNS) - 1)
        return (dict(zip(COLUMNS, fields, strict=True)) if len(fields) == len(COLUMNS)
                else None), True
    if tokened or not line:
        return None, False
    try:
        fields = next(csv.reader([line]), [])
    except csv.Error:
        return None, False
    # Only the released former shape: a caller's line (after a line break in their number)
    # in any other is nothing, and a former row never tells an end.
    return (dict(zip(FORMER_COLUMNS, fields, strict=True))
            if len(fields) == len(FORMER_COLUMNS) else None), False


def read(lines: Iterable[str], token: str) -> CdrReading:
    """The carrier calls in mod_cdr_csv's Master.csv, its ``lines`` (an open file, read as it
    goes) in one pass, and the ends of the calls the controller sent to ring or to a
    voicemail; rows without the install's row ``token`` (once it has been written), other
    and malformed lines skipped and counted (:attr:`CdrReading.skipped`); and whether rows
    of the tokened template were all another install's (:attr:`CdrReading.other_token`).
    It tells no 911s."""
    rows: list[CdrRow] = []
    ends: list[RecordedEnd] = []
    skipped, tokened, ours, others = 0, False, False, False
    for raw in lines:
        line = raw[:-1] if raw.endswith("\n") else raw
        row, of_template = _fields(line, token, tokened)
        tokened = tokened or of_template
        if token and line.startswith(f'"{ROW_MARK}{token}","'):
            ours = True
        elif _OTHER_TOKEN.match(line):
            others = True
        if row is None:
            skipped += bool(line)
            continue
        if row[names.ROUTE] != names.INBOUND or not _UUID.fullmatch(row["uuid"]) \
                or not _EPOCH.fullmatch(row["start_epoch"]) \
                or not _NUMBER.fullmatch(row[names.NUMBER]):
            skipped += row[names.ROUTE] == names.INBOUND
            continue
        fax = row[names.KIND] == names.KIND_FAX
        start = datetime.fromtimestamp(int(row["start_epoch"]), UTC)
        rows.append(CdrRow(caller=row["caller_id_number"][:64], dialled=row[names.NUMBER],
                           context=RECEIVE_CONTEXT if fax else VOICE_CONTEXT,
                           last_app=row["last_app"][:32], start=start, uniqueid=row["uuid"]))
        if of_template and (end := _end(row, start)) is not None:
            ends.append(end)
    return CdrReading(tuple(rows), ends=tuple(ends), skipped=skipped,
                      other_token=others and not ours)


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


def parse(text: str, token: str) -> tuple[CdrRow, ...]:
    """The carrier calls of a record in hand (:func:`read`)."""
    return read(io.StringIO(text), token).rows
