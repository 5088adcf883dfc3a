"""What to do with a call: pure decisions from the directory, registrations and mode.

``decision = route_inbound(...)`` / ``decide_outbound(...)`` are the whole policy; the drivers
only turn the decision into PBX commands.  Same input, same answer: no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.decisions import (
    CallKind,
    FaxRefusal,
    ForwardToAnsweringService,
    InboundCall,
    InboundDecision,
    OpenVoicemail,
    OutboundCall,
    OutboundDecision,
    PlaceCall,
    PlaceEmergencyCall,
    PlayAnnouncement,
    PlayClosedAnnouncement,
    ReceiveFax,
    Refusal,
    RefuseOutbound,
    RefuseUnknownNumber,
    RejectFax,
    RingDeskPhones,
    RingExtension,
    SendToVoicemail,
)
from backline.core.dialling import EXTENSION_DIGITS, VOICEMAIL_CODE
from backline.core.emergency import emergency_caller
from backline.core.hours import HoursState
from backline.core.model import Carry, OwnerKind
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations, RingSet


def ring_set(book: OwnershipBook, registrations: Registrations, number: str) -> RingSet:
    """Registered desk phones of exactly the members of ``number``, those members, and the
    registrations to ring.  Stable order (members sorted): the same state rings the same way.
    """
    return registrations.ring_set(number, book.sorted_members(number))


def route_inbound(book: OwnershipBook, registrations: Registrations, call: InboundCall,
                  mode: Mode, ring_seconds: int, *, fax_storage: bool = True,
                  hours: HoursState = HoursState.OPEN) -> InboundDecision:
    """The decision for one inbound call.  ``fax_storage`` says whether a fax could be stored
    now; the driver checks it (I/O) only when the first answer is ``ReceiveFax``.  ``hours``
    is the dialled number's state now (``backline.core.hours.hours_state``): closed sends a voice
    call down the number's closed path; the outage wins over it, and faxes ignore it."""
    try:
        dialed = e164.normalise(call.dialed)
    except e164.NotE164:
        return RefuseUnknownNumber(call.dialed)
    number = book.number(dialed)
    if number is None:
        return RefuseUnknownNumber(dialed)
    if call.kind is CallKind.FAX or Carry.VOICE not in number.carries:
        if Carry.FAX in number.carries:
            if not fax_storage:
                # Refused before answering: a fax taken in that cannot be kept is lost.
                return RejectFax(dialed, FaxRefusal.NO_STORAGE)
            return ReceiveFax(dialed)  # faxes are received in every mode
        if call.kind is CallKind.FAX:
            return RejectFax(dialed, FaxRefusal.NOT_A_FAX_NUMBER)
    if mode is Mode.OUTAGE:
        return PlayAnnouncement(dialed)
    if Carry.VOICE not in number.carries:
        return RefuseUnknownNumber(dialed)
    closed = book.hours_of(dialed) if hours is HoursState.CLOSED else None
    if closed is not None:
        if closed.closed.forward_to:
            return ForwardToAnsweringService(dialed, closed.closed.forward_to,
                                             number.caller_id_name)
        return PlayClosedAnnouncement(dialed, number.voicemail_box)
    phones, users, contacts = ring_set(book, registrations, dialed)
    if not phones:
        return SendToVoicemail(dialed, number.voicemail_box)
    return RingDeskPhones(dialed, phones, users, contacts, ring_seconds, number.voicemail_box)


def decide_outbound(book: OwnershipBook, conversations: ConversationBook, call: OutboundCall,
                    mode: Mode, emergency_numbers: Iterable[str] = ("911",), *,
                    registrations: Registrations | None = None,
                    ring_seconds: int = 25) -> OutboundDecision:
    """The decision for one call a desk phone places.  ``registrations`` (None: nobody is
    registered) and ``ring_seconds`` are for a call to an extension."""
    if call.to in emergency_numbers:
        # Safety before policy: checked first, so no mode, membership or unknown phone can
        # ever stop an emergency call.
        caller = emergency_caller(book.directory, call.desk_phone)
        if caller is not None:
            return PlaceEmergencyCall(call.to, caller.callback, caller.caller_id_name)
        user = book.user_of_phone(call.desk_phone)
        mine = book.numbers_of(user) if user else ()
        return PlaceEmergencyCall(call.to, call.from_number or (mine[0] if mine else ""))
    dialling = book.user_of_phone(call.desk_phone)
    if dialling is not None and re.fullmatch(EXTENSION_DIGITS, call.to):
        # Before the mode: an internal call never touches the carrier.
        return _ring_extension(book, registrations, dialling, call, ring_seconds)
    if mode is Mode.OUTAGE:
        return RefuseOutbound(Refusal.OUTAGE)
    user = book.user_of_phone(call.desk_phone)
    if user is None:
        return RefuseOutbound(Refusal.UNKNOWN_DESK_PHONE)
    if call.to.startswith(VOICEMAIL_CODE):
        return _voicemail(book, user, call.to[len(VOICEMAIL_CODE):])
    try:
        to = e164.normalise(call.to)
    except e164.NotE164:
        return RefuseOutbound(Refusal.INVALID_DESTINATION)
    if call.from_number is None:
        choices = book.voice_numbers_of(user) or conversations.numbers_for_party(book, user, to)
        if not choices:
            return RefuseOutbound(Refusal.NO_NUMBER)
        from_number = choices[0]
    else:
        try:
            from_number = e164.normalise(call.from_number)
        except e164.NotE164:
            return RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)
    number = book.number(from_number)
    if number is None or Carry.VOICE not in number.carries:
        return RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)
    if not conversations.may_use(book, from_number, to, user):
        return RefuseOutbound(Refusal.NOT_A_MEMBER)
    return PlaceCall(from_number, number.caller_id_name, to)


def _ring_extension(book: OwnershipBook, registrations: Registrations | None, caller: str,
                    call: OutboundCall, ring_seconds: int) -> OutboundDecision:
    """A user's extension rings that user's desk phones; a team's, its active members'."""
    party = book.extension(call.to)
    if party is None:
        return RefuseOutbound(Refusal.INVALID_DESTINATION)
    # A team rings its other members (not the caller's other phones); a user's own extension
    # rings their other phones (a call to oneself, to find a handset).
    who = tuple(m for m in book.team_members(party.id) if m != caller) \
        if party.kind is OwnerKind.TEAM else (party.id,)
    if registrations is None:
        return RefuseOutbound(Refusal.NOBODY_REGISTERED)
    phones: list[str] = []
    users: list[str] = []
    contacts: list[tuple[str, str]] = []
    for user in who:
        regs = [r for r in registrations.live_registrations(user)
                if r.desk_phone != call.desk_phone]
        if regs:
            users.append(user)
            phones.extend(sorted({r.desk_phone for r in regs}))
            contacts.extend((r.desk_phone, r.contact) for r in regs)
    if not contacts:
        return RefuseOutbound(Refusal.NOBODY_REGISTERED)
    me = book.directory.user(caller)
    return RingExtension(call.to, me.name if me else "", me.extension if me else "",
                         tuple(phones), tuple(users), tuple(contacts), ring_seconds)


def _voicemail(book: OwnershipBook, user: str, digits: str) -> OutboundDecision:
    """``*97``: the first number the user is a member of; ``*97`` + number: that one."""
    if digits:
        try:
            wanted = e164.normalise(digits)
        except e164.NotE164:
            return RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)
    else:
        mine = book.voice_numbers_of(user)
        if not mine:
            return RefuseOutbound(Refusal.NOT_A_MEMBER)
        wanted = mine[0]
    number = book.number(wanted)
    if number is None or Carry.VOICE not in number.carries:
        return RefuseOutbound(Refusal.NOT_A_PRACTICE_NUMBER)
    if user not in book.members(wanted):
        return RefuseOutbound(Refusal.NOT_A_MEMBER)
    return OpenVoicemail(wanted, number.voicemail_box)
