"""The end of a fax on FreeSWITCH, as the controller's fax intake takes it.  Pure.

mod_spandsp sets its results as channel variables when rxfax ends, however it ends
(``fax_success``, ``fax_result_code``, ``fax_result_text``, ``fax_document_transferred_pages``,
``fax_remote_station_id``; spandsp_fax.c, phase_e_handler).  They ride on the channel's
CHANNEL_EXECUTE_COMPLETE and CHANNEL_HANGUP_COMPLETE events (``variable_fax_success: 1``:
switch_channel_event_set_extended_data puts every channel variable on those events), which
reach the call's outbound socket; :func:`fax_end` reads them into the same
:class:`~backline.core.fax_intake.FaxEnd` the Asterisk driver reports, so a fax is stored,
converted and journaled the same way by either.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

from backline.core.fax_intake import (
    ERROR_CHARS,
    STATION_ID_CHARS,
    FaxEnd,
    FaxStatus,
    check_uniqueid,
    reported_text,
)
from backline.pbx.freeswitch import names, wire

_PAGES: Final = re.compile(r"[0-9]{1,4}")
_CODE: Final = re.compile(r"[0-9]{1,3}")
_STATUS: Final = {"1": FaxStatus.SUCCESS, "0": FaxStatus.FAILED}


def fax_result_event(events: Sequence[wire.Event]) -> wire.Event | None:
    """The latest event of the call that carries mod_spandsp's results, if any came."""
    for event in reversed(events):
        if event.get(f"variable_{names.FAX_SUCCESS}") is not None:
            return event
    return None


def fax_end(uuid: str, caller: str, dialed: str,
            variable: Callable[[str], str | None]) -> FaxEnd:
    """How the fax on call ``uuid`` ended; ``variable(name)`` reads a channel variable.

    Raises BadFaxReport for a call id FreeSWITCH would not generate.  Anything else that is
    not what mod_spandsp sets is read as unknown rather than refused: the fax still counts.
    """
    success = variable(names.FAX_SUCCESS) or ""
    pages = variable(names.FAX_PAGES) or ""
    code = variable(names.FAX_RESULT_CODE) or ""
    text = reported_text(variable(names.FAX_RESULT_TEXT) or "", ERROR_CHARS)
    status = _STATUS.get(success, FaxStatus.UNKNOWN)
    error = ""
    if status is FaxStatus.FAILED:
        error = f"{text} (code {code})" if _CODE.fullmatch(code) and text else text
    return FaxEnd(
        uniqueid=check_uniqueid(uuid),
        sender=caller[:64],
        dialed="".join(ch for ch in dialed if ch in "+0123456789")[:32],
        status=status,
        pages=int(pages) if _PAGES.fullmatch(pages) else None,
        station_id=reported_text(variable(names.FAX_STATION) or "", STATION_ID_CHARS),
        error=error[:ERROR_CHARS],
    )
