"""The calls the routing policy decides on, and its decisions: frozen values, each union
closed, so a driver matches every decision (``assert_never``) and adds no policy of its own."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CallKind(enum.Enum):
    VOICE = "voice"
    FAX = "fax"


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A call from outside to a practice number.  ``caller`` is untrusted text."""

    dialed: str
    caller: str
    kind: CallKind = CallKind.VOICE


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """A desk phone dialling out; ``from_number`` None means "my default number"."""

    desk_phone: str
    to: str
    from_number: str | None = None


@dataclass(frozen=True, slots=True)
class RingDeskPhones:
    """Ring, at once, the live desk phones of ``users`` (members with at least one).

    ``contacts`` are the registrations to ring, as (desk phone, contact) pairs.
    """

    number: str
    desk_phones: tuple[str, ...]
    users: tuple[str, ...]
    contacts: tuple[tuple[str, str], ...]
    ring_seconds: int
    voicemail_box: str


@dataclass(frozen=True, slots=True)
class SendToVoicemail:
    """Nobody who may see the number has a registered desk phone: straight to voicemail."""

    number: str
    voicemail_box: str


@dataclass(frozen=True, slots=True)
class PlayAnnouncement:
    """Outage: answer, play the announcement, hang up."""

    number: str


@dataclass(frozen=True, slots=True)
class PlayClosedAnnouncement:
    """Closed (the number's hours): answer, play the closed announcement, then the number's
    voicemail."""

    number: str
    voicemail_box: str


@dataclass(frozen=True, slots=True)
class ForwardToAnsweringService:
    """Closed, and the hours name an answering service: the call goes there from the
    number, with its caller ID (carriers refuse to send a caller ID the practice does not
    own, so the patient's number is not passed on as the caller ID)."""

    number: str
    to: str
    caller_id_name: str


@dataclass(frozen=True, slots=True)
class RefuseUnknownNumber:
    """Dialled something that is not a practice number: a polite refusal, not silence."""

    dialed: str


@dataclass(frozen=True, slots=True)
class ReceiveFax:
    number: str


class FaxRefusal(enum.Enum):
    NOT_A_FAX_NUMBER = "not-a-fax-number"
    NO_STORAGE = "no-storage"  # the fax directory cannot take a fax now (unwritable, full)


@dataclass(frozen=True, slots=True)
class RejectFax:
    """Refuse during the call, so the sending machine reports a failure."""

    number: str
    why: FaxRefusal


InboundDecision = (RingDeskPhones | SendToVoicemail | PlayAnnouncement | RefuseUnknownNumber
                   | ReceiveFax | RejectFax | PlayClosedAnnouncement | ForwardToAnsweringService)


@dataclass(frozen=True, slots=True)
class PlaceCall:
    from_number: str
    caller_id_name: str
    to: str


@dataclass(frozen=True, slots=True)
class PlaceEmergencyCall:
    """911 goes out from every desk phone in every mode, with the desk phone's callback
    number and the practice's name (backline.core.emergency); ``from_number`` may be empty only
    for a phone the directory gives none."""

    to: str
    from_number: str
    caller_id_name: str = ""


@dataclass(frozen=True, slots=True)
class OpenVoicemail:
    """A member listens to a number's voicemail (only members can)."""

    number: str
    voicemail_box: str


@dataclass(frozen=True, slots=True)
class RingExtension:
    """A desk phone dialled a colleague's or a team's extension: ring, at once, the
    registered desk phones of ``users`` (a team's active members: a ring group), showing the
    caller's name and extension; unanswered within ``ring_seconds``, the call ends.

    Internal: it never reaches the carrier, so it rings in every mode (an outage included),
    and it is not a patient's attempt, so nothing of it is journaled or reaches the inbox.
    ``contacts`` are the registrations to ring, as (desk phone, contact) pairs; the calling
    desk phone is never among them, nor, for a team, any of the caller's.
    """

    extension: str
    caller_id_name: str
    caller_extension: str
    desk_phones: tuple[str, ...]
    users: tuple[str, ...]
    contacts: tuple[tuple[str, str], ...]
    ring_seconds: int


class Refusal(enum.Enum):
    """Why an outbound call was refused; the value is the short message's name."""

    OUTAGE = "outage"
    UNKNOWN_DESK_PHONE = "unknown-desk-phone"
    NO_NUMBER = "no-number"
    NOT_A_PRACTICE_NUMBER = "not-a-practice-number"
    NOT_A_MEMBER = "not-a-member"
    INVALID_DESTINATION = "invalid-destination"  # also an extension that is nobody's
    NOBODY_REGISTERED = "nobody-registered"  # an extension whose desk phones are all off


@dataclass(frozen=True, slots=True)
class RefuseOutbound:
    why: Refusal


OutboundDecision = (PlaceCall | PlaceEmergencyCall | OpenVoicemail | RingExtension
                    | RefuseOutbound)
