"""The ports both PBX drivers implement and share: what a driver needs from the rest of
Backline (the fax desk), what the rest sees of a driver (its link going down), and the
call records each PBX's CDR import yields.  No driver imports another; both import this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backline.core.fax_intake import FaxEnd, StorageCheck


class LinkDown(Exception):
    """The AMI link is down or an action went unanswered."""


class FaxDesk(Protocol):
    """Where faxes go (``backline.pbx.asterisk.fax.FaxIntake``): asked before a fax is answered,
    told when one ends."""

    async def storage(self) -> StorageCheck: ...

    async def fax_ended(self, end: FaxEnd) -> bool: ...


@dataclass(frozen=True, slots=True)
class CdrRow:
    caller: str
    dialled: str
    context: str
    last_app: str
    start: datetime
    uniqueid: str


# The contexts a fax call ends in (backline.render.asterisk), as the CDR names them.  Spelled
# out, not derived from dialplan_variables: ports import no driver (tests/test_cdr_import.py
# checks they agree).
RECEIVE_CONTEXT = "backline-fax"
REJECT_CONTEXT = "backline-rejectfax"
FAX_CONTEXTS = frozenset({RECEIVE_CONTEXT, REJECT_CONTEXT})
