"""Voicemail, the pure part: a message as the PBX left it, how long its audio is, and the
journal records of a message and of a missed call.  No I/O and no clock.

Asterisk's app_voicemail keeps each message as ``msgNNNN.txt`` (an INI section ``[message]``)
beside its audio in ``voicemail/CONTEXT/BOX/FOLDER/``.  Everything in the text file is ours
or Asterisk's except ``callerid``, which is the caller ID the dialplan filtered
(backline.render.asterisk_dialplan) and is still treated as untrusted: cut and kept as data.
A message is keyed by its ``msg_id`` (Asterisk's, unique per message and kept when a member
moves or listens to it), so a message is journaled once however often the spool is read.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backline.core.decisions import (
    InboundCall,
    InboundDecision,
    PlayClosedAnnouncement,
    RingDeskPhones,
    SendToVoicemail,
)
from backline.core.model import Announcement, Carry, Directory, Number
from backline.core.outage import Mode
from backline.core.records import AttemptKind, Delivery, NewAttempt, Outcome

MAX_INFO_BYTES = 8192  # a message's text file is a few hundred bytes
_MSG_ID = re.compile(r"[0-9]{1,12}-[0-9A-Fa-f]{1,16}")
_BOX = re.compile(r"[0-9A-Za-z_-]{1,40}")
_NUMBER_IN_CALLERID = re.compile(r"<([^<>]{0,64})>\s*$")
_CHANNEL = re.compile(r"[A-Za-z0-9/_.@:;-]{1,80}")


# Where an unanswered call ended, as the dialplan reports it (backline.render.asterisk_dialplan).
ENDED_IN_VOICEMAIL = "voicemail"
ENDED_RINGING = "ringing"


def greeting_clip(box: str) -> str:
    """The name (no extension) of the greeting played before box ``box`` records, beside the
    outage announcement (backline.localpbx.announcement.render_greeting_clips writes it; the
    dialplan names it from the box)."""
    return "greeting-" + box


def voicemail_boxes(d: Directory) -> list[str]:
    """Every voice number's box, once each (two numbers may share one)."""
    return sorted({n.voicemail_box for n in d.numbers
                   if Carry.VOICE in n.carries and n.voicemail_box})


def greeting_of(number: Number, practice: str) -> Announcement:
    """What a caller hears before leaving a message on ``number``: its
    ``voicemail_greeting``, else a greeting spoken from its caller-ID name."""
    if number.greeting is not None:
        return number.greeting
    return Announcement(text=f"You have reached {number.caller_id_name or practice}. Nobody "
                        "can take your call right now. Please leave a message after the tone.")


class NotAMessage(ValueError):
    """A text file in the spool that is not a message app_voicemail wrote whole."""


@dataclass(frozen=True, slots=True)
class VoicemailMessage:
    """One message: ``msg_id`` Asterisk's, ``box`` the number's box, ``caller`` the caller ID
    number as the dialplan filtered it, ``at`` when it was left, ``channel`` the caller's
    channel (the call it came from), ``seconds`` app_voicemail's own count."""

    msg_id: str
    box: str
    caller: str
    at: datetime
    channel: str
    seconds: int


@dataclass(frozen=True, slots=True)
class CallEnd:
    """A call that rang a number or reached its voicemail ended without a desk phone taking
    it (the dialplan's h extension): ``voicemail`` says whether it reached the voicemail;
    ``channel`` is the caller's channel, which names the call in the message it left."""

    uniqueid: str
    box: str
    caller: str
    channel: str
    voicemail: bool


def call_end_from_args(uniqueid: str, channel: str, args: list[str]) -> CallEnd | None:
    """The end the dialplan reported (box, caller, where it ended), or None if it is not
    one of ours (an old dialplan, a box name no config could give)."""
    box, caller, where = [*args, "", "", ""][:3]
    if not _BOX.fullmatch(box) or where not in (ENDED_IN_VOICEMAIL, ENDED_RINGING):
        return None
    return CallEnd(uniqueid[:64], box, caller[:64],
                   channel if _CHANNEL.fullmatch(channel) else "", where == ENDED_IN_VOICEMAIL)


def parse_message(text: str, box: str) -> VoicemailMessage:
    """The message a ``msgNNNN.txt`` describes; NotAMessage if it is not whole (app_voicemail
    writes it before the audio and renames both into the folder, but a read may race)."""
    if len(text) > MAX_INFO_BYTES:
        raise NotAMessage("larger than a message's text file")
    if not _BOX.fullmatch(box):
        raise NotAMessage("not a box of ours")
    fields: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        name, sep, value = line.partition("=")
        if sep and section == "message":
            fields[name.strip()] = value.strip()
    msg_id = fields.get("msg_id", "")
    if not _MSG_ID.fullmatch(msg_id):
        raise NotAMessage("no msg_id")
    try:
        at = datetime.fromtimestamp(int(fields.get("origtime", "")), UTC)
        seconds = int(fields.get("duration", "0") or "0")
    except (ValueError, OverflowError, OSError):
        raise NotAMessage("no origtime or duration") from None
    channel = fields.get("callerchan", "")
    return VoicemailMessage(msg_id, box, caller_number(fields.get("callerid", "")), at,
                            channel if _CHANNEL.fullmatch(channel) else "", max(seconds, 0))


def caller_number(callerid: str) -> str:
    """The number of app_voicemail's ``"Name" <number>`` (or a bare number); "" for
    ``Unknown``.  Only the number is kept: a caller's name is theirs to give, not ours to
    file."""
    found = _NUMBER_IN_CALLERID.search(callerid)
    number = found.group(1) if found else callerid
    number = number.strip()
    return "" if number.lower() == "unknown" else number[:64]


def wav_seconds(data: bytes) -> float:
    """The length of a RIFF/WAVE recording (app_voicemail's ``wav`` format: 8 kHz, 16-bit
    PCM), from its ``fmt `` and ``data`` chunks; ValueError if it is not one."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAVE file")
    at, byte_rate, length = 12, 0, -1
    while at + 8 <= len(data):
        name, size = data[at:at + 4], struct.unpack("<I", data[at + 4:at + 8])[0]
        body = at + 8
        if name == b"fmt " and size >= 16:
            byte_rate = struct.unpack("<I", data[body + 8:body + 12])[0]
        elif name == b"data":
            # Asterisk leaves the size it knew when the caller hung up; trust the bytes.
            length = min(size, len(data) - body)
            break
        at = body + size + (size & 1)
    if byte_rate <= 0 or length < 0:
        raise ValueError("a WAVE file without its format or data")
    return length / byte_rate


def voicemail_key(msg_id: str) -> str:
    return f"voicemail:{msg_id}"


def voicemail_attempt(message: VoicemailMessage, number: str, stored: str, *,
                      node: str = "") -> NewAttempt:
    """The record of a message left on ``number`` (its box's number), its audio kept at
    ``stored``: held for the inbox, in normal mode as in any other (a message is only left
    when the controller sent the call to voicemail)."""
    return NewAttempt(key=voicemail_key(message.msg_id), at=message.at,
                      kind=AttemptKind.VOICEMAIL, mode=Mode.NORMAL, sender=message.caller,
                      recipient=number, outcome=Outcome.VOICEMAIL, file=stored,
                      detail=f"{message.seconds} s", node=node, delivery=Delivery.HELD)


def missed_call_attempt(uniqueid: str, number: str, caller: str, at: datetime, *,
                        node: str = "") -> NewAttempt:
    """The record of a call to ``number`` nobody answered and that left no message: an inbox
    item of its own (``missed:``), beside the call's own record (``call:``)."""
    return NewAttempt(key=f"missed:{uniqueid}", at=at, kind=AttemptKind.CALL,
                      mode=Mode.NORMAL, sender=caller[:64], recipient=number,
                      outcome=Outcome.MISSED, detail="no answer and no message", node=node,
                      delivery=Delivery.HELD)


@dataclass(frozen=True, slots=True)
class HungUp:
    """How the PBX reports an inbound call once the caller's channel is gone (FreeSWITCH's
    CHANNEL_HANGUP_COMPLETE): ``answered`` a desk phone took it; ``message_left`` the
    voicemail kept a message of it."""

    answered: bool
    message_left: bool


def may_be_missed(decision: InboundDecision) -> bool:
    """Whether a call so decided may end as a missed call: sent to ring the number's desk
    phones (then its voicemail), or to its voicemail (straight, or after the closed
    announcement), as the calls the Asterisk dialplan's h extensions report."""
    return isinstance(decision, RingDeskPhones | SendToVoicemail | PlayClosedAnnouncement)


def missed_at_hangup(decision: InboundDecision, call: InboundCall, uniqueid: str,
                     hung_up: HungUp, at: datetime, *, node: str = "") -> NewAttempt | None:
    """The missed call ``call`` (decided ``decision``, the PBX's ``uniqueid``) is when it
    hung up as ``hung_up`` says, at ``at``: the live path's ``missed:`` record, for the
    number it was decided for; None when it may not be missed, a desk phone took it, or it
    left a message (the message is the item)."""
    if hung_up.answered or hung_up.message_left:
        return None
    match decision:
        case RingDeskPhones() | SendToVoicemail() | PlayClosedAnnouncement():
            return missed_call_attempt(uniqueid, decision.number, call.caller, at, node=node)
        case _:
            return None


# A message's origtime and the call record's start and end are Asterisk's own clock, each cut
# to the second: a message of the call lies within them, give or take this.
_IN_CALL = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class RecordedEnd:
    """How the PBX's call record says a call the controller sent to ring ``number``'s desk
    phones or to its voicemail ended: ``answered`` a desk phone took it at some point;
    ``voicemail`` it reached the voicemail; ``recording`` it was still in app_voicemail when
    it ended (a message may have been left); ``no_message`` app_voicemail ended keeping no
    message (the dialplan marked it: a caller who hung up at the beep); ``channel`` the
    caller's channel."""

    uniqueid: str
    number: str
    caller: str
    channel: str
    start: datetime
    end: datetime
    answered: bool
    voicemail: bool
    recording: bool
    no_message: bool = False


@dataclass(frozen=True, slots=True)
class LeftMessage:
    """A message left on ``number`` at ``at``, as the spool (any folder: a listened one is in
    ``Old``) or the journal (a deleted one; no ``channel``, "") knows it."""

    number: str
    at: datetime
    channel: str = ""


def left_in(end: RecordedEnd, message: LeftMessage) -> bool:
    """Whether ``message`` may be the one the call left: its number, within the call, on
    its channel when both are known (a channel name comes again after a PBX restart)."""
    return (message.number == end.number
            and end.start - _IN_CALL <= message.at <= end.end + _IN_CALL
            and (not message.channel or not end.channel or message.channel == end.channel))


def missed_while_away(end: RecordedEnd, messages: Iterable[LeftMessage], *,
                      node: str = "") -> NewAttempt | None:
    """The missed call a call's end stands for when the controller did not hear it: the
    record the live path (the dialplan's h extension) would have written, same key, or None.

    Nothing when a desk phone took the call, or a message of the call is known.  Nothing
    either when it reached the recording and no message is known, unless the PBX said it
    kept none (``no_message``): one may have been left and deleted since, and a missed call
    made up for a message is worse than none."""
    if end.answered:
        return None
    if end.voicemail and (any(left_in(end, m) for m in messages)
                          or (end.recording and not end.no_message)):
        return None
    return missed_call_attempt(end.uniqueid, end.number, end.caller, end.end, node=node)
