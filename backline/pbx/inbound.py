"""An inbound call's decision as both PBX drivers take it: the pure core's answer, the fax
directory asked before a fax is answered, the journal record the decision stands for, and
whether that record must be on disk before the PBX hears the decision.

One place, so that a call through Asterisk and one through FreeSWITCH are decided and
journaled alike (``backline.pbx.callpath`` runs it); the drivers only spell the decision for
their PBX.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backline.core import e164
from backline.core.attempts import call_attempt
from backline.core.decisions import InboundCall, InboundDecision, ReceiveFax, RejectFax
from backline.core.fax_intake import StorageCheck
from backline.core.hours import HoursOverride, hours_state
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.records import NewAttempt
from backline.core.registrations import Registrations
from backline.core.routing import route_inbound


class FaxStorage(Protocol):
    """Whether the fax directory can take a fax now (``backline.pbx.fax_desk.FaxIntake``)."""

    async def storage(self) -> StorageCheck: ...


@dataclass(frozen=True, slots=True)
class Decided:
    """The decision, and its journal record: None for a fax to be received, which is
    journaled when it ends, once, with its pages and PDF."""

    decision: InboundDecision
    attempt: NewAttempt | None


async def decide_inbound(book: OwnershipBook, registrations: Registrations, call: InboundCall,
                         mode: Mode, ring_seconds: int, faxes: FaxStorage | None,
                         uniqueid: str, at: datetime, log: logging.Logger,
                         hours_override: HoursOverride | None = None) -> Decided:
    """Decide ``call`` at ``at`` (the controller's clock, read by the driver: the number's
    hours are judged at it, with the admins' ``hours_override`` while it holds); a fax is
    refused before it is answered if it could not be kept.

    Fax decisions are keyed ``fax:``, other calls ``call:``, so that a call taken as voice
    and then heard to be a fax keeps both records.
    """
    hours = hours_state(book.directory, call.dialed, at, hours_override)
    decision = route_inbound(book, registrations, call, mode, ring_seconds, hours=hours)
    why = ""
    if isinstance(decision, ReceiveFax) and faxes is not None:
        storage = await faxes.storage()  # before the call is answered
        if not storage.ok:
            why = f"the fax directory is {storage.reason}"
            log.error("refusing a fax: %s", why)
            decision = route_inbound(book, registrations, call, mode, ring_seconds,
                                     fax_storage=False, hours=hours)
    log.info("inbound call from %s to %s: %s", e164.redact(call.caller),
             call.dialed if book.number(call.dialed) else "an unknown number",
             type(decision).__name__)
    attempt: NewAttempt | None = None
    if isinstance(decision, RejectFax):
        attempt = dataclasses.replace(
            call_attempt(f"fax:{uniqueid}", call, decision, mode, at),
            detail=f"refused ({decision.why.value}){': ' + why if why else ''}")
    elif not isinstance(decision, ReceiveFax):
        attempt = call_attempt(f"call:{uniqueid}", call, decision, mode, at)
    return Decided(decision, attempt)


def journaled_first(mode: Mode, decision: InboundDecision) -> bool:
    """Whether a call's record goes on disk before the PBX hears its decision.

    In an outage (and for a refused fax) the journal is the attempt's only record, so it is
    written first: if that fails, the PBX hears nothing and its dialplan's fallback answers.
    In normal mode the call rings staff and is journaled right after the decision goes out,
    off the caller's path; a controller that dies in between loses nothing, the CDR import
    brings the call in under the same key.
    """
    return mode is Mode.OUTAGE or isinstance(decision, RejectFax)
