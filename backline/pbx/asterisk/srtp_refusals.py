"""A desk phone that refuses the SRTP-only twin's offer (``encryption: required``,
backline/render/asterisk_srtp.py) is told by Asterisk's ``Hangup`` of the twin's channel:
``PJSIP/ana-desk-SRTP-00000001`` with ``TechCause`` the SIP status the phone answered (488
Not Acceptable Here; ``Cause`` 58, bearer capability not available).  The caller's
``DialEnd`` says only NOANSWER, which an unanswered phone says too (seen on Asterisk 22,
tests/test_srtp_refusals.py).  An answered twin's ``DialEnd`` (ANSWER) says the phone takes
SRTP again.

Both are asked of Asterisk only where the twin exists, and narrowly (:func:`refusal_filters`):
a refusal's ``Hangup`` and an answered ``DialEnd``, not every channel's end."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping

from backline.core.model import Directory
from backline.core.ownership import OwnershipBook
from backline.core.srtp_refusals import FIX, RefusingPhones
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.ami import AmiLink

log = logging.getLogger("backline.asterisk")

# The SIP answers that refuse the offer itself (RFC 3261 21.4.26, 21.6.4; 415: a phone that
# does not know RTP/SAVP), not the phone's user (busy, declined) nor the ring ending.
REFUSING = ("415", "488", "606")
_TWIN = re.compile(r"PJSIP/([A-Za-z0-9._-]{1,80})" + re.escape(v.SRTP_TWIN) + r"-[0-9a-f]+")


def refusal_filters(d: Directory) -> Iterator[dict[str, str]]:
    """AMI ``Filter`` actions for the two events, when some desk phone is rung through its
    twin (none otherwise: a practice without SRTP gets no more events)."""
    if not any(d.requires_srtp(p) for u in d.users for p in u.desk_phones):
        return
    yield {"Action": "Filter", "Operation": "Add",
           "MatchCriteria": "action(include),name(Hangup),header(TechCause),method(regex)",
           "Filter": f"^({'|'.join(REFUSING)})$"}
    yield {"Action": "Filter", "Operation": "Add",
           "MatchCriteria": "action(include),name(DialEnd),header(DialStatus),method(exact)",
           "Filter": "ANSWER"}


def twin_phone(channel: str) -> str:
    """The desk phone whose SRTP twin ``channel`` is; "" for any other channel."""
    m = _TWIN.fullmatch(channel)
    return m.group(1) if m else ""


class RefusalWatch:
    """Reads the events into ``phones``: each refusal logged (the phone's name and the SIP
    status, nothing of the call) and ``counted``; an answer clears the phone.  ``book``
    returns the practice now (a reload swaps it)."""

    def __init__(self, ami: AmiLink, book: Callable[[], OwnershipBook],
                 phones: RefusingPhones, counted: Callable[[], None]) -> None:
        self._book, self._phones, self._counted = book, phones, counted
        ami.on_event("Hangup", self.on_hangup)
        ami.on_event("DialEnd", self.on_dial_end)

    def on_hangup(self, event: Mapping[str, str]) -> None:
        phone, status = twin_phone(event.get("Channel", "")), event.get("TechCause", "")
        if not phone or status not in REFUSING or not self._book().user_of_phone(phone):
            return
        self._counted()
        if self._phones.refused(phone):
            log.warning("desk phone %s refused the encrypted call it was rung with (SIP %s) "
                        "and does not ring (encryption: required); fix: %s", phone, status,
                        FIX)
        else:
            log.info("desk phone %s refused an encrypted call again (SIP %s)", phone, status)

    def on_dial_end(self, event: Mapping[str, str]) -> None:
        if event.get("DialStatus") != "ANSWER":
            return
        phone = twin_phone(event.get("DestChannel", ""))
        if phone and self._phones.answered(phone):
            log.warning("desk phone %s answered an encrypted call: it takes SRTP now", phone)
