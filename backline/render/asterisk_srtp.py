"""pjsip.conf's SRTP: desk phones' media (``encryption: required``, the practice's or a
phone's own) and the carrier's (``trunk.srtp``).  Pure: config in, lines out; the rest of
pjsip.conf is backline/render/asterisk_pjsip.py's."""

from __future__ import annotations

from backline.core.connections import AsteriskPbx
from backline.core.model import Directory
from backline.pbx.asterisk import dialplan_variables as v

# With ``encryption: required``, where desk phones' calls enter: only those signalled over
# TLS go on to the desk phones' context (render/asterisk_desk_dialplan.py).
SECURE_DESK_CONTEXT = "backline-desk-tls"


def desk_phone_media(d: Directory, desk_phone: str) -> list[str]:
    """``encryption: required`` (the phone's own, else the practice's): SRTP keyed by SDES
    (the keys ride in the SDP, inside the phone's TLS).  The phone's own endpoint takes a
    plain-RTP offer (optimistic) so that PJSIP never refuses a 911 call before the dialplan
    runs; the dialplan then refuses any other call not signalled over TLS or not SRTP
    (SECURE_DESK_CONTEXT).  Calls to a phone go through its twin (``srtp_twin``), which
    offers nothing but SRTP, over TLS only (a phone registered over UDP is not rung: the
    key would cross the LAN readable)."""
    if not d.requires_srtp(desk_phone):
        return []
    return [f"context={SECURE_DESK_CONTEXT}", "media_encryption=sdes",
            "media_encryption_optimistic=yes", "transport=transport-tls"]


def srtp_twin(login: str, phone: str) -> list[str]:
    """The endpoint that rings ``phone`` when its media must be SRTP: the phone's own takes
    a plain-RTP offer (so 911 is never refused before the dialplan runs), and so offers SRTP
    keys in plain RTP/AVP, which a phone that insists on SRTP refuses (RFC 8643); this one
    offers RTP/SAVP and takes no answer without keys.  Nothing comes in through it: it is
    found only by a digest user of its own name, which no auth has, and its context
    refuses."""
    return [f"[{phone}{v.SRTP_TWIN}](desk-phone)", f"aors={login}", f"auth={phone}-auth",
            f"context={v.context(v.REFUSE)}", "identify_by=auth_username",
            "media_encryption=sdes", "media_encryption_optimistic=no",
            "transport=transport-tls", ""]


def carrier_media(pbx: AsteriskPbx) -> list[str]:
    """``trunk.srtp``: the calls' media to and from the carrier SRTP, keyed by SDES inside
    the trunk's TLS, and nothing else (a plain offer or answer fails the call, 911 aside:
    clear_emergency_endpoint)."""
    return (["media_encryption=sdes", "media_encryption_optimistic=no"]
            if pbx.trunk.srtp else [])


def clear_emergency_endpoint(carrier: str) -> str:
    """With ``trunk.srtp``, where a 911 call goes when the carrier would not take it as
    SRTP: the carrier (endpoint ``carrier``) again, plain RTP (emergency calls never fail
    on our policy)."""
    return f"{carrier}-clear"


def clear_emergency(pbx: AsteriskPbx, carrier: str, transport: list[str]) -> list[str]:
    """That endpoint's section (only with ``trunk.srtp``): outbound only, like the 911
    twin (identify_by=ip and no identify section: no inbound call is ever matched to it)."""
    trunk = pbx.trunk
    if not trunk.srtp:
        return []
    return ["; 911 when the carrier would not take it as SRTP: the same, plain RTP.",
            f"[{clear_emergency_endpoint(carrier)}]", "type=endpoint",
            f"context={v.CARRIER_CONTEXT}", "disallow=all", "allow=ulaw,alaw",
            "direct_media=no", "rtp_symmetric=yes", f"aors={carrier}", "send_pai=yes",
            "trust_id_outbound=yes", "trust_id_inbound=no",
            f"media_address={pbx.sip.host}", "bind_rtp_to_media_address=yes",
            "identify_by=ip", *transport,
            *([f"outbound_auth={carrier}-auth"] if trunk.username else []),
            *(["geoloc_outgoing_call_profile=<prefer_incoming>"]
              if trunk.geolocation else []), ""]
