"""Whether an inbound SMS gets the outage auto-reply, and if not, why.  Pure.

The reply goes from the practice number the message was sent to, through the practice's SMS
gateway.  A number that does not carry SMS, or is not registered for business texting, sends
nothing (carriers block unregistered business texting), so the reply is recorded as not sent
with that reason instead of being tried: the inbox and ``backline attempts`` say what
happened, not what was meant to.
"""

from __future__ import annotations

from dataclasses import dataclass

from backline.core.connections import SmsGateway
from backline.core.model import Carry, Number
from backline.core.outage import Mode

NOT_CARRYING_SMS = "the number does not carry SMS"
NOT_REGISTERED = "the number is not registered for business texting"
NO_GATEWAY = "no SMS gateway is configured to send it"
OUTAGE_OVER = "the outage ended before it could be sent"


@dataclass(frozen=True, slots=True)
class SendReply:
    """Send the auto-reply (and retry it until sent, while the outage lasts)."""


@dataclass(frozen=True, slots=True)
class NoReply:
    """The auto-reply is owed but will not be sent: ``why`` (no number, no text in it)."""

    why: str


ReplyPlan = SendReply | NoReply


def auto_reply(number: Number | None, mode: Mode, gateway: SmsGateway | None) -> ReplyPlan | None:
    """The plan for the reply to an SMS received in ``mode`` at ``number`` (None: not a
    practice number); None when no reply is owed at all (normal mode, or refused)."""
    if mode is not Mode.OUTAGE or number is None:
        return None
    if Carry.SMS not in number.carries:
        return NoReply(NOT_CARRYING_SMS)
    if not number.texting_registered:
        return NoReply(NOT_REGISTERED)
    if gateway is None or not gateway.url or not gateway.account:
        return NoReply(NO_GATEWAY)
    return SendReply()
