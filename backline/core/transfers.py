"""Transfers by the desk phone's own buttons: where an outside call goes when the desk phone
that has it transfers it, and what that does to who may see the conversation.  Pure.

An outside call on practice number N, transferred by a user:

- to an extension (a colleague's or a team's): their registered desk phones ring; whoever of
  them is not a member of N is added to that one conversation (N, caller), so they may call
  the caller back from N and nobody else;
- to an outside number: an outbound call from N with N's caller ID, by the outbound rules
  (only if the transferring user may call out from N to that party; never in an outage);
- refused, or to nobody reachable: never dropped in silence: the caller rings the
  transferring user's desk phones again, then N's voicemail.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from backline.core import e164
from backline.core.conversations import ConversationBook
from backline.core.decisions import Refusal
from backline.core.dialling import EXTENSION_DIGITS
from backline.core.model import Carry, OwnerKind
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.registrations import Registrations


class TransferKind(enum.Enum):
    BLIND = "blind"  # REFER: the PBX dials the target for the caller
    ATTENDED = "attended"  # REFER with Replaces: the caller joins a call already made


@dataclass(frozen=True, slots=True)
class Transfer:
    """A desk phone transferring the outside call ``caller`` → ``number`` to ``to`` (the
    digits the phone sent).  ``caller`` is untrusted text."""

    desk_phone: str
    to: str
    number: str
    caller: str
    kind: TransferKind = TransferKind.BLIND


@dataclass(frozen=True, slots=True)
class RingTransferTarget:
    """Ring ``contacts`` (an extension's desk phones) for the caller; unanswered, the
    number's voicemail.  ``added``: users to add to the conversation (number, party)."""

    number: str
    party: str
    by: str
    extension: str
    users: tuple[str, ...]
    contacts: tuple[tuple[str, str], ...]
    ring_seconds: int
    voicemail_box: str
    added: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TransferOut:
    """Send the caller out to ``to`` from ``number``, with its caller ID."""

    number: str
    caller_id_name: str
    to: str
    by: str
    voicemail_box: str


@dataclass(frozen=True, slots=True)
class TransferRefused:
    """The transfer may not happen: the caller rings ``back_to`` (the transferring user's
    desk phones) again, then the number's voicemail (``voicemail_box``; "" when the call was
    on no practice number: then a short refusal)."""

    why: Refusal
    by: str
    back_to: tuple[tuple[str, str], ...]
    ring_seconds: int
    voicemail_box: str


TransferDecision = RingTransferTarget | TransferOut | TransferRefused


@dataclass(frozen=True, slots=True)
class AttendedJoin:
    """An attended transfer (REFER with Replaces) joined the caller to a call the user had
    already made: to a colleague's desk phone (``to`` their user id) or out (``to`` "").
    The PBX did it on its own; ``added``: users to add to the conversation (number, party).
    Going out, it stands only if :func:`decide_transfer` allows the same transfer blind: the
    consultation call followed the outbound rules of the number it went out from, which need
    not be the caller's."""

    number: str
    party: str
    by: str
    to: str
    added: tuple[str, ...]


TransferOutcome = TransferDecision | AttendedJoin


def attended_join(book: OwnershipBook, conversations: ConversationBook, transfer: Transfer,
                  target_phone: str) -> AttendedJoin | None:
    """What an attended transfer of the outside call ``transfer`` (``number``, ``caller``)
    to the call of ``target_phone`` (a desk phone, or "" for an outside party) means for the
    conversation: the target's user, if not a member of the number, is added.  None when it
    was no outside call on a practice number or no known desk phone's."""
    by = book.user_of_phone(transfer.desk_phone)
    number = book.number(transfer.number)
    if by is None or number is None:
        return None
    try:
        party = e164.normalise(transfer.caller)
    except e164.NotE164:
        party = ""
    to = book.user_of_phone(target_phone) or "" if target_phone else ""
    added = (to,) if to and party and to not in book.members(number.number) \
        and not conversations.is_added(book, number.number, party, to) else ()
    return AttendedJoin(number.number, party, by, to, added)


def decide_transfer(book: OwnershipBook, conversations: ConversationBook,
                    registrations: Registrations | None, transfer: Transfer, mode: Mode,
                    ring_seconds: int) -> TransferDecision:
    """The decision for one blind transfer (see the module's rules)."""
    user = book.user_of_phone(transfer.desk_phone)
    number = book.number(transfer.number)
    box = number.voicemail_box if number is not None and Carry.VOICE in number.carries else ""
    back = tuple((r.desk_phone, r.contact)
                 for r in (registrations.live_registrations(user)
                           if registrations is not None and user else ()))

    def refuse(why: Refusal) -> TransferRefused:
        return TransferRefused(why, user or "", back, ring_seconds, box)

    if user is None:
        return refuse(Refusal.UNKNOWN_DESK_PHONE)
    if number is None or not box:
        return refuse(Refusal.NOT_A_PRACTICE_NUMBER)
    try:
        party = e164.normalise(transfer.caller)
    except e164.NotE164:
        party = ""  # anonymous: no conversation to add anyone to
    if re.fullmatch(EXTENSION_DIGITS, transfer.to):
        target = book.extension(transfer.to)
        if target is None:
            return refuse(Refusal.INVALID_DESTINATION)
        who = tuple(m for m in book.team_members(target.id) if m != user) \
            if target.kind is OwnerKind.TEAM else (target.id,)
        contacts = tuple((r.desk_phone, r.contact) for u in who
                         for r in (registrations.live_registrations(u)
                                   if registrations is not None else ())
                         if r.desk_phone != transfer.desk_phone)
        if not contacts:
            return refuse(Refusal.NOBODY_REGISTERED)
        ringing = tuple(dict.fromkeys(u for u in who
                                      if any(book.user_of_phone(p) == u for p, _ in contacts)))
        added = tuple(u for u in ringing if party and u not in book.members(number.number)
                      and not conversations.is_added(book, number.number, party, u))
        return RingTransferTarget(number.number, party, user, transfer.to, ringing, contacts,
                                  ring_seconds, box, added)
    if mode is Mode.OUTAGE:
        return refuse(Refusal.OUTAGE)
    try:
        to = e164.normalise(transfer.to)
    except e164.NotE164:
        return refuse(Refusal.INVALID_DESTINATION)
    if book.number(to) is not None:
        return refuse(Refusal.INVALID_DESTINATION)  # a practice number: dial its extension
    if user not in book.members(number.number) and \
            not conversations.is_added(book, number.number, to, user):
        return refuse(Refusal.NOT_A_MEMBER)
    return TransferOut(number.number, number.caller_id_name, to, user, box)


def transfer_note(decision: TransferOutcome, kind: TransferKind) -> str:
    """What the call's journal record says of the transfer: who handled the call and to
    whom it went (users and extensions; an outside number by its last digits only)."""
    match decision:
        case RingTransferTarget():
            to = ", ".join(decision.users)
            added = f"; added {', '.join(decision.added)} to the conversation" \
                if decision.added else ""
            return (f"handled by {decision.by}; {kind.value} transfer to extension "
                    f"{decision.extension} ({to}){added}")
        case TransferOut():
            return (f"handled by {decision.by}; {kind.value} transfer out to "
                    f"{e164.redact(decision.to)} from {decision.number}")
        case TransferRefused():
            back = f"back to {decision.by}" if decision.back_to else "to voicemail"
            return (f"handled by {decision.by or 'an unknown desk phone'}; {kind.value} "
                    f"transfer refused ({decision.why.value}): the caller went {back}")
        case AttendedJoin():
            added = f"; added {', '.join(decision.added)} to the conversation" \
                if decision.added else ""
            return (f"handled by {decision.by}; {kind.value} transfer to "
                    f"{decision.to or 'an outside call'}{added}")
