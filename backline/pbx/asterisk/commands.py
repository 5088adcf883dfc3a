"""Core decisions as the channel variables the rendered dialplan acts on.  Pure.

The decision is the policy; this is only its spelling for Asterisk.  Each value comes from
the directory (validated desk-phone names, numbers, caller-ID names) or from the core, never
from the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import assert_never

from backline.core import decisions as r
from backline.core.hours import closed_clip
from backline.core.model import Directory
from backline.core.ownership import OwnershipBook
from backline.pbx.asterisk import dialplan_variables as v
from backline.pbx.ports import UnsafeValue

Variables = list[tuple[str, str]]


def ring_endpoint(desk_phone: str, d: Directory) -> str:
    """The endpoint that rings ``desk_phone``: its SRTP-only twin when its media must be
    SRTP (dialplan_variables.SRTP_TWIN), else its own."""
    return desk_phone + v.SRTP_TWIN if d.requires_srtp(desk_phone) else desk_phone


def ring_targets(contacts: Iterable[tuple[str, str]], d: Directory) -> str:
    """Each registration by its contact: ``PJSIP/endpoint`` alone would ring only one
    contact of a login's shared AOR.  Contacts were checked when they registered."""
    return "&".join(f"PJSIP/{ring_endpoint(phone, d)}/{contact}" for phone, contact in contacts)


def packed(variables: Variables) -> tuple[str, str]:
    """A decision's variables as the single (name, value) the dialplan unpacks.

    Raises UnsafeValue for a variable the dialplan does not unpack, or a value holding the
    separator (it would shift every field after it): refused, never sent.
    """
    values = dict(variables)
    unknown = sorted(set(values) - set(v.FIELDS))
    if unknown:
        raise UnsafeValue("variables", ",".join(unknown), "the dialplan does not unpack them")
    for name, value in values.items():
        if v.FIELD_SEPARATOR in value:
            raise UnsafeValue(name, value, "holds the field separator")
    return v.DECISION, v.FIELD_SEPARATOR.join(values.get(name, "") for name in v.FIELDS)


def inbound_variables(decision: r.InboundDecision, book: OwnershipBook) -> Variables:
    match decision:
        case r.RingDeskPhones():
            return [(v.DIAL, ring_targets(decision.contacts, book.directory)),
                    (v.RING_SECONDS, str(decision.ring_seconds)),
                    (v.VOICEMAIL_BOX, decision.voicemail_box), (v.ACTION, v.RING)]
        case r.SendToVoicemail():
            return [(v.VOICEMAIL_BOX, decision.voicemail_box), (v.ACTION, v.VOICEMAIL)]
        case r.PlayAnnouncement():
            return [(v.ACTION, v.ANNOUNCE)]
        case r.RefuseUnknownNumber():
            return [(v.ACTION, v.UNKNOWN)]
        case r.ReceiveFax():
            # The dialplan names the file itself (from the call's uniqueid, in the PBX's
            # spool), so a fax the PBX takes alone lands in the same place.
            return [(v.ACTION, v.FAX)]
        case r.RejectFax():
            return [(v.ACTION, v.REJECT_FAX)]
        case r.PlayClosedAnnouncement():
            return [(v.VOICEMAIL_BOX, decision.voicemail_box),
                    (v.SOUND, closed_clip(decision.number)), (v.ACTION, v.CLOSED)]
        case r.ForwardToAnsweringService():
            return [(v.CALLER_ID_NUM, decision.number),
                    (v.CALLER_ID_NAME, decision.caller_id_name),
                    (v.DIAL_TO, decision.to), (v.ACTION, v.FORWARD)]
        case _:
            assert_never(decision)


def outbound_variables(decision: r.OutboundDecision, d: Directory) -> Variables:
    match decision:
        case r.PlaceCall():
            return [(v.CALLER_ID_NUM, decision.from_number),
                    (v.CALLER_ID_NAME, decision.caller_id_name),
                    (v.DIAL_TO, decision.to), (v.ACTION, v.CALL)]
        case r.PlaceEmergencyCall():
            # The dialplan sends 911 out before asking us; this is the same route if a
            # phone's dial plan reaches us with it anyway.
            return [(v.CALLER_ID_NUM, decision.from_number),
                    (v.CALLER_ID_NAME, decision.caller_id_name),
                    (v.DIAL_TO, decision.to), (v.ACTION, v.CALL)]
        case r.OpenVoicemail():
            return [(v.VOICEMAIL_BOX, decision.voicemail_box), (v.ACTION, v.VOICEMAIL_MAIN)]
        case r.RingExtension():
            # Contacts as for an inbound call (RingDeskPhones); the caller's name loses what
            # would split the packed decision or a SIP display name.
            return [(v.DIAL, ring_targets(decision.contacts, d)),
                    (v.RING_SECONDS, str(decision.ring_seconds)),
                    (v.CALLER_ID_NUM, decision.caller_extension),
                    (v.CALLER_ID_NAME, "".join(ch for ch in decision.caller_id_name
                                               if ch not in '^"<>\\')[:40]),
                    (v.ACTION, v.INTERNAL)]
        case r.RefuseOutbound():
            return [(v.REFUSAL, decision.why.value), (v.ACTION, v.REFUSE)]
        case _:
            assert_never(decision)
