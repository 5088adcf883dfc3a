"""FreeSWITCH's own record of carrier calls (mod_cdr_csv), read as the Asterisk CDR is.  Pure.

When the controller is away the rendered dialplan answers on its own (the announcement; rxfax
for a fax number), and mod_cdr_csv still writes a row per call with the template rendered
here (:data:`TEMPLATE`). On return the controller reads the rows into the same
:class:`~backline.pbx.ports.CdrRow` the Asterisk import uses, keyed by the channel's
uuid: ``call:UUID`` is the key the driver journals a call under, and a fax goes to the fax
intake under ``fax:UUID``, so a call the controller already journaled is not recorded twice,
and a re-import is harmless.

Only rows the dialplan marked as a practice number's carrier call (``backline_route`` is
``inbound``) count: desk phones' calls and unknown numbers are not attempts.  The caller's
number is untrusted and comes last, so that nothing it holds can shift the fields before it;
a row that does not parse, or whose uuid is not a FreeSWITCH uuid, is skipped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from backline.pbx.freeswitch import names
from backline.pbx.ports import RECEIVE_CONTEXT, CdrReading, CdrRow

# The channel variables of a row, in order (``${start_epoch}``: whole seconds, UTC).
COLUMNS: Final = ("uuid", "start_epoch", names.ROUTE, names.NUMBER, names.KIND, "last_app",
                  "hangup_cause", "caller_id_number")
TEMPLATE: Final = ",".join(f'"${{{column}}}"' for column in COLUMNS)
TEMPLATE_NAME: Final = "backline"
# What a carrier call that was no fax is filed under (any context but the fax ones).
VOICE_CONTEXT: Final = names.CARRIER_CONTEXT

_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EPOCH: Final = re.compile(r"[0-9]{1,12}")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,15}")


def read(lines: Iterable[str]) -> CdrReading:
    """The carrier calls in mod_cdr_csv's Master.csv, its ``lines`` (an open file, read as it
    goes) in one pass; other and malformed rows skipped.  It tells no 911s and no ends."""
    rows: list[CdrRow] = []
    for fields in csv.reader(lines):
        if len(fields) != len(COLUMNS):
            continue
        row = dict(zip(COLUMNS, fields, strict=True))
        if row[names.ROUTE] != names.INBOUND or not _UUID.fullmatch(row["uuid"]) \
                or not _EPOCH.fullmatch(row["start_epoch"]) \
                or not _NUMBER.fullmatch(row[names.NUMBER]):
            continue
        fax = row[names.KIND] == names.KIND_FAX
        rows.append(CdrRow(caller=row["caller_id_number"][:64], dialled=row[names.NUMBER],
                           context=RECEIVE_CONTEXT if fax else VOICE_CONTEXT,
                           last_app=row["last_app"][:32],
                           start=datetime.fromtimestamp(int(row["start_epoch"]), UTC),
                           uniqueid=row["uuid"]))
    return CdrReading(tuple(rows))


def parse(text: str) -> tuple[CdrRow, ...]:
    """The carrier calls of a record in hand (:func:`read`)."""
    return read(io.StringIO(text)).rows
