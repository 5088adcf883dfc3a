"""What an inbound call becomes in the journal.  Pure: decision and call in, record out."""

from __future__ import annotations

from datetime import datetime
from typing import assert_never

from backline.core.decisions import (
    ForwardToAnsweringService,
    InboundCall,
    InboundDecision,
    PlayAnnouncement,
    PlayClosedAnnouncement,
    ReceiveFax,
    RefuseUnknownNumber,
    RejectFax,
    RingDeskPhones,
    SendToVoicemail,
)
from backline.core.outage import Mode
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome


def outcome_of(decision: InboundDecision) -> Outcome:
    match decision:
        case RingDeskPhones():
            return Outcome.RANG
        case SendToVoicemail() | PlayClosedAnnouncement():
            return Outcome.VOICEMAIL
        case ForwardToAnsweringService():
            return Outcome.FORWARDED
        case PlayAnnouncement():
            return Outcome.ANNOUNCED
        case RefuseUnknownNumber():
            return Outcome.REFUSED
        case ReceiveFax():
            return Outcome.RECEIVED
        case RejectFax():
            return Outcome.REJECTED
        case _:
            assert_never(decision)


def call_attempt(key: str, call: InboundCall, decision: InboundDecision, mode: Mode,
                 at: datetime, node: str = "") -> NewAttempt:
    """The record of one inbound call; held for the inbox when it came in an outage."""
    recipient = getattr(decision, "number", None) or call.dialed
    kind = AttemptKind.FAX if isinstance(decision, ReceiveFax | RejectFax) else AttemptKind.CALL
    held = mode is Mode.OUTAGE and not isinstance(decision, RefuseUnknownNumber)
    return NewAttempt(key=key, at=at, kind=kind, mode=mode, sender=call.caller[:64],
                      recipient=str(recipient)[:64], outcome=outcome_of(decision), node=node,
                      delivery=Delivery.HELD if held else Delivery.NOT_NEEDED)
