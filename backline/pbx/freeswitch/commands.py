"""Core decisions as the dialplan applications FreeSWITCH runs on the call.  Pure.

The decision is the policy; this is only its spelling for FreeSWITCH: a list of
``(application, argument)`` pairs sent one by one as ``sendmsg`` ``execute``.  Every value
comes from the directory (validated desk-phone names, numbers, caller-ID names) or from the
core (an E.164 destination); none comes from the caller.  Each is checked once more here,
so that a value that slipped past the config loader is refused instead of sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, assert_never

from backline.core.decisions import (
    ForwardToAnsweringService,
    InboundDecision,
    OpenVoicemail,
    OutboundDecision,
    PlaceCall,
    PlaceEmergencyCall,
    PlayAnnouncement,
    PlayClosedAnnouncement,
    ReceiveFax,
    RefuseOutbound,
    RefuseUnknownNumber,
    RejectFax,
    RingDeskPhones,
    RingExtension,
    SendToVoicemail,
)
from backline.core.hours import closed_clip
from backline.core.voicemail import greeting_clip
from backline.pbx.freeswitch import names
from backline.pbx.ports import UnsafeValue

Application = tuple[str, str | None]

_DESK_PHONE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_DOMAIN: Final = re.compile(r"[A-Za-z0-9.:\[\]-]{1,253}")
_NUMBER: Final = re.compile(r"\+?[0-9]{1,15}")
BOX: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")  # a voicemail box, as rendered
# What carriers pass through in a caller-ID name, and nothing that FreeSWITCH's variable
# expansion (``$``, ``{``), its app-argument splitting (``,``... not here) or SIP quoting
# (``"``, ``<``) would act on.
_CID_NAME: Final = re.compile(r"[A-Za-z0-9 .'&-]{0,15}")
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
PATH: Final = re.compile(r"/[A-Za-z0-9_./-]{1,255}")  # an absolute path we name


def _checked(field: str, pattern: re.Pattern[str], value: str) -> str:
    if not pattern.fullmatch(value):
        raise UnsafeValue(field, value, "is not what the field allows")
    return value


def caller_id_name(text: str) -> str:
    """The caller-ID name we send: allowed characters only, at most 15 (carriers cut more)."""
    return "".join(ch for ch in text if _CID_NAME.fullmatch(ch))[:15].strip()


@dataclass(frozen=True, slots=True)
class Sounds:
    """Where the sounds are, as FreeSWITCH sees them (absolute, or relative to its
    sounds directory)."""

    announcement: str
    refusal: str = names.REFUSAL_SOUND
    outbound_refusal: str = names.OUTBOUND_REFUSAL_SOUND
    fax_spool: str = "/var/lib/freeswitch/fax"


RING_ONLY_ON_ANSWER: Application = ("set", "ignore_early_media=ring_ready")
"""Before a bridge that rings desk phones at once.  By default the originate returns on the
first leg's early media (a 183 with SDP): that phone would win, the others stop ringing, and
``call_timeout`` no longer applies, so an unanswered call never reaches voicemail.  With
``ring_ready`` only an answer ends the ringing, and the caller is sent 180 on the first 183
(FreeSWITCH's channel variable catalogue, ``ignore_early_media``)."""


def inbound_applications(decision: InboundDecision, domain: str, sounds: Sounds,
                         call_uuid: str) -> list[Application]:
    domain = _checked("domain", _DOMAIN, domain)
    match decision:
        case RingDeskPhones():
            # user/PHONE@DOMAIN rings every registration of that directory user; the comma
            # rings them all at once.  Unanswered: the bridge fails (continue_on_fail) and
            # the call goes on to the number's voicemail.
            targets = ",".join(f"user/{_checked('desk_phone', _DESK_PHONE, p)}@{domain}"
                               for p in decision.desk_phones)
            return [missable(decision.number),
                    ("set", "hangup_after_bridge=true"),
                    ("set", "continue_on_fail=true"),
                    ("set", f"call_timeout={int(decision.ring_seconds)}"),
                    RING_ONLY_ON_ANSWER,
                    ("bridge", targets),
                    ("answer", None),
                    ("voicemail", f"{names.VOICEMAIL_PROFILE} {domain} "
                                  f"{_checked('voicemail_box', BOX, decision.voicemail_box)}"),
                    ("hangup", None)]
        case SendToVoicemail():
            return [missable(decision.number), ("answer", None),
                    ("voicemail", f"{names.VOICEMAIL_PROFILE} {domain} "
                                  f"{_checked('voicemail_box', BOX, decision.voicemail_box)}"),
                    ("hangup", None)]
        case PlayAnnouncement():
            return [("answer", None),
                    ("playback", _checked("announcement", PATH, sounds.announcement)),
                    ("hangup", None)]
        case RefuseUnknownNumber():
            return [("answer", None), ("playback", sounds.refusal), ("hangup", None)]
        case ReceiveFax():
            return [*fax_setup(), ("answer", None),
                    ("rxfax", fax_file(sounds.fax_spool, call_uuid)), ("hangup", None)]
        case RejectFax():
            # Answered, then hung up once the sender's fax session has begun: the sending
            # machine reports a failed fax (refused unanswered, many just redial at once).
            return [("answer", None), ("sleep", str(names.REJECT_WAIT_MS)),
                    ("hangup", names.REJECT_CAUSE)]
        case PlayClosedAnnouncement():
            # The clip lies beside the announcement (backline render writes both).
            folder = _checked("announcement", PATH, sounds.announcement).rpartition("/")[0]
            clip = f"{folder}/{closed_clip(_checked('number', _NUMBER, decision.number))}.wav"
            return [missable(decision.number), ("answer", None), ("playback", clip),
                    ("voicemail", f"{names.VOICEMAIL_PROFILE} {domain} "
                                  f"{_checked('voicemail_box', BOX, decision.voicemail_box)}"),
                    ("hangup", None)]
        case ForwardToAnsweringService():
            return [("set", "effective_caller_id_number="
                            f"{_checked('number', _NUMBER, decision.number)}"),
                    ("set", f"effective_caller_id_name={caller_id_name(decision.caller_id_name)}"),
                    ("bridge", f"sofia/gateway/{names.GATEWAY}/"
                               f"{_checked('to', _NUMBER, decision.to)}"),
                    ("hangup", None)]
        case _:
            assert_never(decision)


def missable(number: str) -> Application:
    """First on a call that may end missed (backline.core.voicemail.may_be_missed): the
    number it was decided for, on the channel and so in mod_cdr_csv's row of it."""
    return ("set", f"{names.MISSABLE}={_checked('number', _NUMBER, number)}")


def fax_setup() -> list[Application]:
    """Before a fax is answered: T.38 both ways."""
    return [("set", f"{names.FAX_T38}=true"), ("set", f"{names.FAX_T38_REQUEST}=true")]


def greeting_setup(box: str, announcement: str) -> list[Application]:
    """Before box ``box`` takes a message: the number's greeting, rendered beside the
    announcement (``greeting-BOX.wav``, as for Asterisk), and no instructions after it."""
    folder = _checked("announcement", PATH, announcement).rpartition("/")[0]
    clip = greeting_clip(_checked("voicemail_box", BOX, box))
    return [("set", f"{names.SKIP_INSTRUCTIONS}=true"),
            ("set", f"{names.VOICEMAIL_GREETING}={folder}/{clip}.wav")]


def fax_file(spool: str, call_uuid: str) -> str:
    """Where rxfax writes the fax of call ``call_uuid``."""
    spool = _checked("fax_spool", PATH, spool)
    return f"{spool}/" + names.FAX_FILE.format(uuid=_checked("uuid", _UUID, call_uuid))


def outbound_applications(decision: OutboundDecision, domain: str, sounds: Sounds
                          ) -> list[Application]:
    domain = _checked("domain", _DOMAIN, domain)
    match decision:
        case PlaceCall():
            return [("set", "effective_caller_id_number="
                            f"{_checked('from_number', _NUMBER, decision.from_number)}"),
                    ("set", f"effective_caller_id_name={caller_id_name(decision.caller_id_name)}"),
                    ("bridge", f"sofia/gateway/{names.GATEWAY}/"
                               f"{_checked('to', _NUMBER, decision.to)}"),
                    ("hangup", None)]
        case PlaceEmergencyCall():
            apps: list[Application] = []
            if decision.from_number:
                # The callback number in From (the gateway's caller-id-in-from) and, with
                # sip_cid_type=pid, in P-Asserted-Identity too, as the rendered dialplan's own
                # 911 extension and Asterisk send it (backline/core/emergency.py).
                apps.append(("set", "effective_caller_id_number="
                             f"{_checked('from_number', _NUMBER, decision.from_number)}"))
                apps.append(("set", "sip_cid_type=pid"))
            if decision.caller_id_name:
                apps.append(("set", "effective_caller_id_name="
                             f"{caller_id_name(decision.caller_id_name)}"))
            return [*apps, ("bridge", f"sofia/gateway/{names.GATEWAY}/"
                                      f"{_checked('to', _NUMBER, decision.to)}"),
                    ("hangup", None)]
        case OpenVoicemail():
            # The controller has checked the desk phone's user is a member: ``auth`` skips
            # the box's password (voicemail_function in mod_voicemail.c), which is a
            # generated secret nobody is given, as Asterisk's VoiceMailMain(...,s) does.
            return [("answer", None),
                    ("voicemail", f"check auth {names.VOICEMAIL_PROFILE} {domain} "
                                  f"{_checked('voicemail_box', BOX, decision.voicemail_box)}"),
                    ("hangup", None)]
        case RingExtension():
            # Each desk phone as a directory user rings all its registrations; unanswered,
            # the call ends (nothing after the bridge but the hangup).
            targets = ",".join(f"user/{_checked('desk_phone', _DESK_PHONE, p)}@{domain}"
                               for p in decision.desk_phones)
            cid: list[Application] = []
            if decision.caller_extension:
                cid.append(("set", "effective_caller_id_number="
                            f"{_checked('caller_extension', _NUMBER, decision.caller_extension)}"))
            return [*cid,
                    ("set", f"effective_caller_id_name={caller_id_name(decision.caller_id_name)}"),
                    ("set", f"call_timeout={int(decision.ring_seconds)}"),
                    RING_ONLY_ON_ANSWER,
                    ("bridge", targets), ("hangup", None)]
        case RefuseOutbound():
            return [("answer", None), ("playback", sounds.outbound_refusal), ("hangup", None)]
        case _:
            assert_never(decision)
