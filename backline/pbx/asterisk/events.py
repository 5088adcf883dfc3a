"""The AMI events the Asterisk driver acts on, read into the core's values: a parked call's
steps, a desk phone's 911 and attended transfers (which calls they join).  Apart
from the driver (backline/pbx/asterisk/driver.py) so that it keeps to the link and the calls."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from datetime import datetime
from typing import Any

from backline.core.bans import FAILURES as SECURITY_FAILURES
from backline.core.conversations import ConversationBook
from backline.core.emergency import EmergencyCall
from backline.core.outage import Mode
from backline.core.ownership import OwnershipBook
from backline.core.park import ParkEvent, ParkStep
from backline.core.records import NewAttempt
from backline.core.transfers import (
    Transfer,
    TransferDecision,
    TransferKind,
    TransferRefused,
    attended_join,
)
from backline.pbx.asterisk import cdr
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.asterisk.ami import AmiLink
from backline.pbx.asterisk.dialplan_variables import CALLER, DIALLED_AS, PARTY
from backline.pbx.asterisk.transfers import (
    ATTENDED_EVENT,
    OnTransfer,
    attended_parties,
    desk_phone_of,
    take_back,
)
from backline.pbx.ports import CdrRow, LinkDown

log = logging.getLogger("backline.asterisk")

# OriginateResponse: the end of a notice call we placed (panoramisk hands it to the action).
# res_parking's events about a parked call: each is a step of the call's record.
PARK_EVENTS = {"ParkedCall": ParkStep.PARKED, "UnParkedCall": ParkStep.PICKED_UP,
               "ParkedCallTimeOut": ParkStep.TIMED_OUT, "ParkedCallGiveUp": ParkStep.ABANDONED}
# AttendedTransfer: a desk phone's REFER with Replaces, which Asterisk performs on its own.
WANTED_EVENTS = ("ContactStatus", "UserEvent", "OriginateResponse", ATTENDED_EVENT,
                 *PARK_EVENTS, *sorted(SECURITY_FAILURES))
_NAME = re.compile(r"[A-Za-z0-9._-]{1,80}")
_DIALLED = re.compile(r"\+?[0-9]{1,32}")  # FILTER(+0-9) in the dialplan, as the CDR keeps it
_CALLER = re.compile(r"[+*#0-9A-Za-z]{0,64}")  # CALLER_CHARS, cut to MAX_CALLER


async def only_events_we_use(ami: AmiLink, narrower: Iterable[Mapping[str, str]] = ()
                             ) -> None:
    """Ask Asterisk for the events the controller acts on, and no others (``narrower``:
    more ``Filter`` actions, for some calls' events only).

    Unfiltered, Asterisk sends about 120 events a call (VarSet, Newexten, ...); parsing
    them took two thirds of the controller's CPU per call in bench/calls.py.  Answers to
    our own actions (ContactList, DBGetResponse) are not events of the stream and pass.
    """
    try:
        for event in WANTED_EVENTS:
            await ami.action({"Action": "Filter", "Operation": "Add",
                              "Filter": f"Event: {event}"}, within=3.0)
        for action in narrower:
            answer: Any = await ami.action(action, within=3.0)
            if str(answer.get("Response", "")).lower() == "error":
                log.error("Asterisk refused an AMI filter (%s): %s", action.get("Filter"),
                          answer.get("Message", "?"))
    except LinkDown as exc:
        log.warning("could not filter AMI events (all of them will come): %s", exc)


def emergency_call(event: Mapping[str, str], at: datetime) -> EmergencyCall | None:
    """A desk phone's 911 from an event of its channel (``PJSIP/ana-desk-0000002a``: the
    endpoint, then Asterisk's sequence number; ``Exten`` the number dialled, one of the
    emergency numbers); None, logged, if unreadable.  A caller a desk phone blind-transferred
    to 911 is its own channel: the dialplan put the phone's name in its ``AccountCode``."""
    phone = event.get("AccountCode", "") if event.get("Context") == v.TRANSFER_CONTEXT \
        else event.get("Channel", "").removeprefix("PJSIP/").rpartition("-")[0]
    dialled, uniqueid = event.get("Exten", ""), event.get("Uniqueid", "")
    if not (_NAME.fullmatch(phone) and dialled.isdigit() and _NAME.fullmatch(uniqueid)):
        log.error("an emergency call event we cannot read; the CDR import will bring it")
        return None
    return EmergencyCall(f"emergency:{uniqueid}", at, phone, dialled[:8])


def failsafe_call(event: Mapping[str, str], at: datetime, mode: Mode) -> NewAttempt | None:
    """The attempt the dialplan's FAILSAFE_EVENT stands for: a carrier call the PBX answered
    with the announcement because no decision came back (late, or FastAGI refused) while
    this controller was still on AMI.  Keyed as the controller and the CDR import key it, so
    it is journaled once whichever comes first.  None for a fax (journaled when it ends, with
    its pages), for any other event and, logged, for one we cannot read (the next login's
    import brings it)."""
    if event.get("UserEvent") != v.FAILSAFE_EVENT or event.get("Failsafe") != v.ANNOUNCE:
        return None
    dialled, caller = event.get("Dialled", ""), event.get("Caller", "")
    uniqueid = event.get("Uniqueid", "")
    if not (_NAME.fullmatch(uniqueid) and _DIALLED.fullmatch(dialled)
            and _CALLER.fullmatch(caller)):
        log.error("a fail-safe call event we cannot read; the CDR import will bring it")
        return None
    log.warning("a call was answered by the PBX's fail-safe (no decision reached it in "
                "time); journaling it")
    row = CdrRow(caller, dialled, v.context(v.ANNOUNCE), "Playback", at, uniqueid)
    return dataclasses.replace(
        cdr.attempt_for(row, lambda _: mode),
        detail="answered by the PBX alone: no decision reached it from the controller")


def park_event(event: Mapping[str, str]) -> ParkEvent | None:
    """A step of a parked call (res_parking's events): the parked channel is the outside
    caller's, whose uniqueid keys the call's record; the parker is a dial string
    (``PJSIP/ENDPOINT``), whoever picked it up a channel name.  None for other events, and
    (logged) for one we cannot read."""
    step = PARK_EVENTS.get(event.get("Event", ""))
    if step is None:
        return None
    uniqueid, slot = event.get("ParkeeUniqueid", ""), event.get("ParkingSpace", "")
    if not (_NAME.fullmatch(uniqueid) and slot.isdigit() and len(slot) <= 8):
        log.error("a parking event we cannot read (%s)", step.value)
        return None
    if step is ParkStep.PICKED_UP:
        phone = desk_phone_of(event.get("RetrieverChannel", ""))
    else:
        parker = (event.get("ParkerDialString", "").removeprefix("PJSIP/")
                  .removesuffix(v.SRTP_TWIN))
        phone = parker if _NAME.fullmatch(parker) else ""
    return ParkEvent(f"call:{uniqueid}", step, slot, phone)


async def attended_transfer(event: Mapping[str, str], ami: AmiLink, book: OwnershipBook,
                            conversations: ConversationBook, on_transfer: OnTransfer,
                            decide: Callable[[Transfer], TransferDecision]) -> None:
    """A successful AttendedTransfer event: which outside call it joined to which desk phone
    (the channels' variables are read over ``ami`` while the channels are still up).

    Joined to an outside party instead, the transfer is judged by the rules of a blind one
    (``decide``, the core's ``decide_transfer``): the user must be one who could call that
    party from the number the caller came in on.  Asterisk has joined them already (it
    performs a REFER with Replaces on its own, before telling anyone), so a refused one is
    undone at once: the caller goes back to the transferring user's desk phones (then the
    number's voicemail) and the outside party is hung up (:func:`take_back`)."""
    async def channel_variable(channel: str, name: str) -> str:
        answer: Any = await ami.action({"Action": "Getvar", "Channel": channel,
                                        "Variable": name}, within=5.0)
        return str(answer.get("Value") or "")[:64]

    async def refuse(caller: str, target: str, decision: TransferRefused) -> None:
        await take_back(ami.action, caller, target, decision, book.directory)

    by, ends = attended_parties(event)
    ours = [phone for phone, _, _ in ends if book.user_of_phone(phone)]
    for phone, channel, uniqueid in ends:
        if phone in ours:
            continue
        # The outside caller is the end that came in on a number (the dialplan kept it on
        # its channel, filtered); a call placed out has none.
        number = await channel_variable(channel, "BACKLINE_DIALED")
        if not number:
            continue
        caller = await channel_variable(channel, "BACKLINE_CALLER")
        peer = ""
        if not ours:
            # Some AttendedTransfer events name no target (seen on Asterisk 22 under
            # load): whom the caller is bridged to now says it.
            peer = await channel_variable(channel, "BRIDGEPEER")
            ours = [desk_phone_of(peer)] if book.user_of_phone(desk_phone_of(peer)) else []
        target = ours[0] if ours else ""
        outside = next((c for _, c, _ in ends if c != channel), peer)
        if not target and outside and await _refused_out(
                by, number, caller, channel, outside, channel_variable, decide, refuse,
                on_transfer, f"call:{uniqueid}", book.directory.emergency_numbers):
            return
        transfer = Transfer(by, target, number, caller, TransferKind.ATTENDED)
        join = attended_join(book, conversations, transfer, target)
        if join is not None:
            log.info("attended transfer from desk phone %s to %s", by,
                     target or "an outside call")
            await on_transfer(f"call:{uniqueid}", transfer, join)
        return


async def _refused_out(by: str, number: str, caller: str, caller_channel: str, target: str,
                       channel_variable: Callable[[str, str], Awaitable[str]],
                       decide: Callable[[Transfer], TransferDecision],
                       take_back: Callable[[str, str, TransferRefused], Awaitable[None]],
                       on_transfer: OnTransfer, key: str, emergency: Collection[str]) -> bool:
    """Whether the attended transfer of ``caller_channel`` to the outside channel ``target``
    was refused (and undone, and journaled).  The party is the one the consultation call was
    placed to, or the caller ID of an outside caller that came in; unknown, it is refused.
    To one of the ``emergency`` numbers it always stands: no rule is between a patient and
    the dispatcher.  A desk phone's 911 sets no party before its ``Dial()``: its carrier
    channel is known by what app_dial dialled it with, ``DIALEDPEERNUMBER``
    (``911@ENDPOINT``; the channel's own EXTEN is empty)."""
    party = await channel_variable(target, PARTY) or await channel_variable(target, CALLER)
    if party in emergency or (
            not party and (await channel_variable(target, DIALLED_AS)).partition("@")[0]
            in emergency):
        return False  # a caller put through to 911 stays with the dispatcher
    transfer = Transfer(by, party, number, caller, TransferKind.ATTENDED)
    decision = decide(transfer)
    if not isinstance(decision, TransferRefused):
        return False
    log.warning("attended transfer from desk phone %s to an outside party refused (%s): the "
                "caller goes back", by, decision.why.value)
    await take_back(caller_channel, target, decision)
    await on_transfer(key, transfer, decision)
    return True


def told_unsealed(event: Mapping[str, str], book: OwnershipBook) -> bool:
    """Whether ``event`` is the dialplan's UNSEALED_EVENT (a desk phone's call refused
    under ``encryption: required`` for want of TLS or SRTP), logged if so: which phone and
    what it lacked, never the number it dialled."""
    if event.get("UserEvent") != v.UNSEALED_EVENT:
        return False
    phone, sealed = event.get("Phone", ""), event.get("Sealed", "")[:2].ljust(2, "0")
    lacked = [what for what, bit in zip(("TLS", "SRTP"), sealed, strict=True) if bit != "1"]
    log.warning("desk phone %s: a call without %s refused (encryption: required)",
                phone if book.user_of_phone(phone) else "?",
                " and ".join(lacked) or "TLS and SRTP")
    return True
