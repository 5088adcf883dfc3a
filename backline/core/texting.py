"""Whether a member of staff may text a party from a practice number.  Pure.

The rule is the outbound call's (:func:`backline.core.routing.decide_outbound`), through the
same :meth:`~backline.core.conversations.ConversationBook.may_use`: a number's members text
from it, towards anyone; someone added to one conversation texts that party only; in an
outage nothing goes out (the backup design refuses outbound messaging).  Texting adds what
calls do not have: the number must carry SMS and be registered for business texting
(carriers block unregistered business texts, so it sends nothing).

A refusal's ``why`` names the user and the practice number, never the party or the text.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.model import Carry
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook


@dataclass(frozen=True, slots=True)
class OutboundText:
    """``user`` asks to text ``to`` from the practice number ``from_number`` (any spelling)."""

    user: str
    from_number: str
    to: str


@dataclass(frozen=True, slots=True)
class SendText:
    """Send it: both numbers canonical E.164."""

    from_number: str
    to: str


class TextRefusal(enum.Enum):
    """Why a text was refused; the value is the short name the API answers with."""

    OUTAGE = "outage"
    UNKNOWN_USER = "unknown-user"
    INVALID_DESTINATION = "invalid-destination"
    NOT_A_PRACTICE_NUMBER = "not-a-practice-number"
    NO_SMS = "no-sms"
    UNREGISTERED = "unregistered"
    NOT_A_MEMBER = "not-a-member"
    WRONG_PARTY = "wrong-party"


@dataclass(frozen=True, slots=True)
class RefuseText:
    why: TextRefusal
    detail: str  # the refusal in words: user and practice number only


TextDecision = SendText | RefuseText


def decide_text(book: OwnershipBook, conversations: ConversationBook, text: OutboundText,
                mode: Mode) -> TextDecision:
    """The decision for one staff text.  Same input, same answer."""
    if mode is Mode.OUTAGE:
        return RefuseText(TextRefusal.OUTAGE, "an outage is engaged: outbound messaging is "
                          "refused until it ends")
    user = text.user
    if not book.is_active(user):
        return RefuseText(TextRefusal.UNKNOWN_USER, f"no active user {user!r} in the directory")
    try:
        to = e164.normalise(text.to)
    except e164.NotE164 as exc:
        return RefuseText(TextRefusal.INVALID_DESTINATION, f"the party is not {exc.why}")
    if book.number(to) is not None:
        return RefuseText(TextRefusal.INVALID_DESTINATION,
                          "the party is a practice number, not an outside party")
    try:
        from_number = e164.normalise(text.from_number)
    except e164.NotE164 as exc:
        return RefuseText(TextRefusal.NOT_A_PRACTICE_NUMBER, f"the number is not {exc.why}")
    number = book.number(from_number)
    if number is None:
        return RefuseText(TextRefusal.NOT_A_PRACTICE_NUMBER,
                          f"{from_number} is not one of the practice's numbers")
    if Carry.SMS not in number.carries:
        return RefuseText(TextRefusal.NO_SMS, f"{from_number} does not carry SMS")
    if not number.texting_registered:
        return RefuseText(TextRefusal.UNREGISTERED, f"{from_number} is not registered for "
                          "business texting, so it sends nothing")
    if not conversations.may_use(book, from_number, to, user):
        if conversations.added_on(book, from_number, user):
            return RefuseText(TextRefusal.WRONG_PARTY, f"{user} was added to other "
                              f"conversations of {from_number}, not to this party's")
        return RefuseText(TextRefusal.NOT_A_MEMBER, f"{user} is not a member of {from_number} "
                          "and was not added to this conversation")
    return SendText(from_number, to)


# -- delivery status, as the gateway's status callbacks report it -----------------------------

# Twilio's MessageStatus values for an outbound message, in the order they happen
# (twilio.com/docs/messaging/api/message-resource#message-status-values); the last three
# are final.  Callbacks may arrive out of order, so a status never moves a text backwards.
_PROGRESS = {"accepted": 0, "scheduled": 0, "queued": 1, "sending": 2, "sent": 3,
             "delivered": 4, "undelivered": 4, "failed": 4, "canceled": 4, "read": 5}


def is_delivery_status(status: str) -> bool:
    return status in _PROGRESS


def later_status(current: str, reported: str) -> bool:
    """Whether ``reported`` moves a text on from ``current`` ("" for none yet): never back,
    and never from one final status to another."""
    if reported not in _PROGRESS:
        return False
    if current not in _PROGRESS:
        return True
    return _PROGRESS[reported] > _PROGRESS[current]
