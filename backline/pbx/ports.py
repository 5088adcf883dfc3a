"""The ports both PBX drivers implement and share: what a driver needs from the rest of
Backline (the fax desk), what the rest sees of a driver (one error hierarchy: the link
down, a command refused, a value we would not send), and the call records each PBX's CDR
import yields.  No driver imports another; both import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from backline.core.emergency import EmergencyCall
from backline.core.fax_intake import FaxEnd, StorageCheck
from backline.core.voicemail import CallEnd, RecordedEnd, VoicemailMessage


class PbxError(Exception):
    """The PBX did not take what we asked (the base the controller catches): its link is
    down, or it answered and refused."""


class LinkDown(PbxError):
    """The link to the PBX (AMI, the Event Socket) is down, dropped while an action was in
    flight, or an action went unanswered: the next login tries again."""


class PbxRefused(PbxError):
    """The PBX answered and refused the command: the link is fine, the command is not."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command}: {reply}")
        self.command = command
        self.reply = reply


class UnsafeValue(ValueError):
    """*We* were about to send the PBX a value that would not survive the trip (it could end
    a command, split a field, or be read as something else): refused, never sent.

    The message names the field and why, never the value, which may be a caller's text; the
    value is kept on the exception for a debugger.
    """

    def __init__(self, field: str, value: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class FaxDesk(Protocol):
    """Where faxes go (``backline.pbx.fax_desk.FaxIntake``): asked before a fax is answered,
    told when one ends."""

    async def storage(self) -> StorageCheck: ...

    async def fax_ended(self, end: FaxEnd) -> bool: ...


class VoicemailDesk(Protocol):
    """Where unanswered calls go (``backline.pbx.voicemail_desk.VoicemailIntake``): told when
    one ends, to take in its message or journal it as missed, or told of a message left and
    where its recording is (FreeSWITCH says so by an event)."""

    async def call_ended(self, end: CallEnd) -> bool: ...

    async def message_left(self, message: VoicemailMessage, audio: Path) -> bool: ...


@dataclass(frozen=True, slots=True)
class CdrRow:
    caller: str
    dialled: str
    context: str
    last_app: str
    start: datetime
    uniqueid: str


@dataclass(frozen=True, slots=True)
class CdrReading:
    """What one pass over the PBX's call record found: the carrier calls (``rows``), the 911s
    desk phones placed or transferred a caller to, and how each call that rang desk phones or
    reached a voicemail ended (``ends``).  A PBX whose record tells only calls has none of
    the other two."""

    rows: tuple[CdrRow, ...]
    emergencies: tuple[EmergencyCall, ...] = ()
    ends: tuple[RecordedEnd, ...] = ()
    skipped: int = 0  # lines that were no row the PBX wrote as rendered (logged, not read)
    # Rows in the rendered shape were found, none with this install's row token (FreeSWITCH).
    other_token: bool = False


# The contexts a fax call ends in (backline.render.asterisk), as the CDR names them.  Spelled
# out, not derived from dialplan_variables: ports import no driver (tests/test_cdr_import.py
# checks they agree).
RECEIVE_CONTEXT = "backline-fax"
REJECT_CONTEXT = "backline-rejectfax"
FAX_CONTEXTS = frozenset({RECEIVE_CONTEXT, REJECT_CONTEXT})
