"""What to do with a call: pure decisions from the directory, registrations and mode.

``decision = route_inbound(...)`` / ``decide_outbound(...)`` are the whole policy; the drivers
only turn the decision into PBX commands.  Same input, same answer: no clock, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.emergency import emergency_caller
from backline.core.hours import HoursState
from backline.core.model import Carry, OwnerKind
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook

# -- registrations ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Registration:
    """One registered contact of a desk phone; ``at`` orders them (newest wins): when it
    registered, or when the PBX will let it expire (a refresh moves that on)."""

    at: float
    desk_phone: str
    contact: str = field(default="", compare=False)


class Registrations:
    """Live desk-phone registrations, capped per login (user) at ``max_per_login``.

    A login may hold at most ``max_per_login`` registrations at once; past that the oldest
    is dropped, so a phone left logged in on a borrowed desk stops ringing.  Fed one event at
    a time (``register``/``unregister``) the limit is applied here; fed the PBX's whole list
    (``mirror``) the PBX has applied it.  The per-user view is recomputed on each change (rare)
    so that ringing (every call) is a few dict lookups.
    """

    def __init__(self, book: OwnershipBook, max_per_login: int) -> None:
        self._book = book
        self._max = max_per_login
        self._by_phone: dict[str, dict[str, Registration]] = {}
        self._live: dict[str, tuple[str, ...]] = {}
        self._kept: dict[str, tuple[Registration, ...]] = {}

    def register(self, desk_phone: str, contact: str, at: float) -> tuple[Registration, ...]:
        """Record a registration; return the registrations it pushed past the login's limit."""
        user = self._book.user_of_phone(desk_phone)
        if user is None:
            return ()
        self._by_phone.setdefault(desk_phone, {})[contact] = Registration(at, desk_phone, contact)
        return self._recompute(user)

    def unregister(self, desk_phone: str, contact: str | None = None) -> None:
        """Forget one contact of a desk phone, or all of them when ``contact`` is None."""
        contacts = self._by_phone.get(desk_phone)
        if contacts is None:
            return
        if contact is None:
            contacts.clear()
        else:
            contacts.pop(contact, None)
        user = self._book.user_of_phone(desk_phone)
        if user is not None:
            self._recompute(user)

    def mirror(self, held: Iterable[Registration]
               ) -> tuple[tuple[Registration, ...], tuple[Registration, ...]]:
        """Hold exactly ``held``: every registration the PBX lists now, each under the desk
        phone that registered it; registrations of unknown desk phones are left out.

        Nothing is dropped for the login limit here: a PBX that enforces it (Asterisk's
        ``max_contacts``) removes the registration it chooses and lists the rest, and a
        controller that guessed its choice came to ring a different phone from the one it
        kept.  Returns (added, removed), each sorted by (desk phone, contact), for the log.
        """
        before = {(r.desk_phone, r.contact): r
                  for contacts in self._by_phone.values() for r in contacts.values()}
        by_phone: dict[str, dict[str, Registration]] = {}
        for r in held:
            if self._book.user_of_phone(r.desk_phone) is not None:
                by_phone.setdefault(r.desk_phone, {})[r.contact] = r
        self._by_phone = by_phone
        after = {(r.desk_phone, r.contact): r
                 for contacts in by_phone.values() for r in contacts.values()}
        for user in {self._book.user_of_phone(phone) for phone, _ in before.keys() | after}:
            if user is not None:
                self._recompute(user, capped=False)
        return (tuple(after[k] for k in sorted(after.keys() - before.keys())),
                tuple(before[k] for k in sorted(before.keys() - after.keys())))

    def has_contact(self, user_id: str, contact: str) -> bool:
        return any(contact in self._by_phone.get(p, {}) for p in self._book.desk_phones(user_id))

    def forget_contact(self, user_id: str, contact: str) -> None:
        """Forget ``contact`` whichever of the user's desk phones holds it."""
        for phone in self._book.desk_phones(user_id):
            self._by_phone.get(phone, {}).pop(contact, None)
        self._recompute(user_id)

    def live(self, user_id: str) -> tuple[str, ...]:
        """Desk phones of ``user_id`` that ring now (within the login limit), sorted."""
        return self._live.get(user_id, ())

    def live_registrations(self, user_id: str) -> tuple[Registration, ...]:
        """The registrations of ``user_id`` that ring now, newest first."""
        return self._kept.get(user_id, ())

    def _recompute(self, user: str, *, capped: bool = True) -> tuple[Registration, ...]:
        """The login's live view again; ``capped``, the oldest registrations past the login
        limit are dropped and returned."""
        regs = sorted((r for p in self._book.desk_phones(user)
                       for r in self._by_phone.get(p, {}).values()), reverse=True)
        cap = self._max if capped else len(regs)
        kept, dropped = regs[:cap], tuple(regs[cap:])
        for r in dropped:
            self._by_phone[r.desk_phone].pop(r.contact, None)
        self._live[user] = tuple(sorted({r.desk_phone for r in kept}))
        self._kept[user] = tuple(kept)
        return dropped


# -- calls and decisions ---------------------------------------------------------------------


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


CHOOSE_NUMBER_PREFIX = "*7"
VOICEMAIL_CODE = "*97"


def dialled(desk_phone: str, digits: str) -> OutboundCall:
    """What a desk phone dialled: ``DEST``, or ``*7`` + a 10-digit practice number + ``DEST``
    to call out from that number (a phone has no other way to pick a caller ID)."""
    if digits.startswith(CHOOSE_NUMBER_PREFIX) and len(digits) > 12 and digits[2:12].isdigit():
        return OutboundCall(desk_phone, digits[12:], "+1" + digits[2:12])
    return OutboundCall(desk_phone, digits)


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

# What a desk phone dials to reach a colleague or a team (config.py checks the same shape).
EXTENSION_DIGITS = "[1-9][0-9]{1,5}"
# What else a desk phone dials that is not an outside number: the outage switch, the hours
# override (*26 closed, *27 open), voicemail, and the prefix that picks the number to call out from.
FEATURE_CODES = ("*28", "*29", "*26", "*27", VOICEMAIL_CODE, CHOOSE_NUMBER_PREFIX)


def extension_clash(extension: str, emergency_numbers: Iterable[str],
                    numbers: Iterable[str]) -> str | None:
    """What dialling ``extension`` would reach instead of its owner, or None: an emergency
    number (which always goes out first), a feature code, or a practice number as a desk
    phone may dial it (``numbers`` are E.164: +1NXXNXXXXXX, 1NXXNXXXXXX, NXXNXXXXXX)."""
    if extension in emergency_numbers:
        return f"the emergency number {extension}"
    for code in FEATURE_CODES:
        if extension.startswith(code) or code.startswith(extension):
            return f"the feature code {code}"
    for number in numbers:
        digits = number.lstrip("+")
        if extension in (number, digits, digits[1:] if number.startswith("+1") else digits):
            return f"the practice number {number}"
    try:
        return f"the outside number {e164.normalise(extension)}"
    except e164.NotE164:
        return None


# -- the policy ------------------------------------------------------------------------------


def ring_set(book: OwnershipBook, registrations: Registrations, number: str
             ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
    """Registered desk phones of exactly the members of ``number``, those members, and the
    registrations to ring.  Stable order (members sorted): the same state rings the same way.
    """
    phones: list[str] = []
    users: list[str] = []
    contacts: list[tuple[str, str]] = []
    for user in book.sorted_members(number):
        live = registrations.live(user)
        if live:
            phones.extend(live)
            users.append(user)
            contacts.extend((r.desk_phone, r.contact)
                            for r in registrations.live_registrations(user))
    return tuple(phones), tuple(users), tuple(contacts)


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
    closed = book.directory.hours_of(dialed)
    if hours is HoursState.CLOSED and closed is not None:
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
    if user not in book.members(from_number) and \
            not conversations.is_added(book, from_number, to, user):
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
