"""Asterisk configuration rendered from the practice directory: pure, config in, text out.

:func:`render` gives every file Backline owns: pjsip.conf and its secrets, geolocation.conf
(``asterisk_pjsip``), extensions.conf (``asterisk_dialplan``), and here the small ones:
voicemail, CDR and AMI.  Untrusted text (caller IDs, dialled strings) is never written into
these files; what is written (desk-phone names, numbers, caller-ID names) was validated by
the config loader.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from backline.core.connections import AsteriskPbx
from backline.core.model import Carry, Directory
from backline.pbx.asterisk import dialplan_variables as v
from backline.render.asterisk_desk_dialplan import (
    PARK_TIMEOUT_CONTEXT,
    PARKED_CONTEXT,
    PARKING_LOT,
)
from backline.render.asterisk_dialplan import extensions_conf
from backline.render.asterisk_pjsip import (
    TlsFiles,
    geolocation_conf,
    pjsip_auth_conf,
    pjsip_conf,
)
from backline.render.hold_music import HOLD_MUSIC


@dataclass(frozen=True, slots=True)
class AsteriskSecrets:
    """Secrets rendered into the 0600 files: never part of the directory objects."""

    ami: str
    desk_phones: Mapping[str, str]
    carrier: str = ""  # the carrier account's password (trunk.username), when it has one


@dataclass(frozen=True, slots=True)
class RenderedFile:
    name: str
    text: str
    private: bool = False  # holds a secret: written 0600


def voicemail_conf(d: Directory) -> str:
    out = ["; Rendered by `backline render`. One box per practice number; only its members",
           "; reach it (the controller checks membership before VoiceMailMain).",
           "; minsecs: a caller who hangs up at the beep leaves no empty message (a missed",
           "; call instead: backline.core.voicemail); app_voicemail's default, 0, keeps one.",
           "[general]", "format=wav", "attach=no", "maxmsg=200", "maxsecs=180", "minsecs=1",
           "",
           f"[{v.VOICEMAIL_CONTEXT}]"]
    for n in d.numbers:
        if Carry.VOICE in n.carries:
            out.append(f"{n.voicemail_box} => ,{n.caller_id_name or n.number}")
    return "\n".join(out) + "\n"


def cdr_conf() -> str:
    """CDRs to a CSV: the PBX's own record of calls, imported by the controller on return."""
    return """\
; Rendered by `backline render`. The controller imports this record when it returns, so a
; call the PBX answered on its own while the controller was away is journaled too.
[general]
enable=yes
unanswered=yes
[csv]
usegmtime=yes
loguniqueid=yes
loguserfield=yes
accountlogs=no
"""


# Newchannel, Newstate, SoftHangupRequest and TestEvent (three a call from this build):
# formatted for every call while the controller is logged in, read by nothing of Backline's
# (bench/outage.py, with the controller up, against no AMI session at all).
QUIET_EVENTS = ("Newexten", "VarSet", "AGIExecStart", "AGIExecEnd", "NewConnectedLine",
                "NewCallerid", "NewAccountCode", "RTCPSent", "RTCPReceived", "Newchannel",
                "Newstate", "SoftHangupRequest", "TestEvent")


def controller_address(pbx: AsteriskPbx) -> str:
    """Where the controller's AMI login comes from: the address it listens on for FastAGI.
    Only on one host is that Asterisk's own address (``ami.host``); in containers or on
    separate machines it is not.  A wildcard FastAGI listener names no one address, so the
    AMI user is then kept to Asterisk's host as before."""
    host = pbx.agi.host.strip("[]")
    try:
        if ipaddress.ip_address(host).is_unspecified:
            return pbx.ami.host
    except ValueError:
        pass
    return host


def manager_conf(pbx: AsteriskPbx, secret: str) -> str:
    controller = controller_address(pbx)
    mask = "128" if ":" in controller else "255.255.255.255"
    return f"""\
; Rendered by `backline render`. AMI on loopback or a private address only. Mode 0600.
[general]
enabled=yes
port={pbx.ami.port}
bindaddr={pbx.ami.host}
displayconnects=no
; Never raised: nothing of Backline's listens to them, and while any AMI session is connected
; (the controller's always is) Asterisk formats each for every dialplan step of every call:
; about 1.5 ms of its CPU per call in bench/calls.py.  Remove a name to get it back.
disabledevents={",".join(QUIET_EVENTS)}

; The AMI user logs in only from the controller's address (where it listens for FastAGI).
; "security": failed SIP authentications, from which the controller bans scanners
; (connections.pbx.bans); the events disabled above stay disabled.
[{pbx.ami_username}]
secret={secret}
deny=0.0.0.0/0.0.0.0
permit={controller}/{mask}
read=system,call,agent,user,config,dtmf,reporting,dialplan,originate,security
write=system,call,agent,user,config,command,reporting,originate
"""


def res_parking_conf(d: Directory) -> str:
    """The one parking lot: its slots, how long a call waits, and where it goes then."""
    park = d.park
    out = ["; Rendered by `backline render`: edit the practice YAML, not this file.",
           "[general]", "parkeddynamic=no", ""]
    if park is None:
        return "\n".join([*out, "; no park: section: nothing is parked"]) + "\n"
    out += [f"[{PARKING_LOT}]", f"context={PARKED_CONTEXT}",
            f"parkpos={park.slots[0]}-{park.slots[-1]}", "findslot=first",
            f"parkingtime={park.timeout}", "parkedmusicclass=default",
            # Back to our own context (not Asterisk's park-dial): the ring-back, then
            # voicemail if the parker does not answer either.
            "comebacktoorigin=no", f"comebackcontext={PARK_TIMEOUT_CONTEXT}",
            "parkedcalltransfers=no", "parkedcallreparking=no", ""]
    return "\n".join(out) + "\n"


def musiconhold_conf(announcement: str) -> str:
    """What a parked (or held) caller hears: the hold music rendered beside the outage
    announcement (backline.render.hold_music), looped."""
    sounds = announcement.rpartition("/")[0] or "."
    return ("; Rendered by `backline render`: edit the practice YAML, not this file.\n"
            "[default]\nmode=playlist\n"
            f"entry={sounds}/{HOLD_MUSIC}\n")


def render(d: Directory, secrets: AsteriskSecrets, announcement: str,
           tls: TlsFiles | None = None) -> list[RenderedFile]:
    """Every Asterisk file Backline owns, for the PBX in ``d.connections.pbx``; ``tls``: the
    TLS certificate and key where Asterisk reads them, if not where the config names them."""
    pbx = d.connections.pbx
    if not isinstance(pbx, AsteriskPbx):
        raise ValueError("the config's PBX is not Asterisk")
    return [
        RenderedFile("pjsip.conf", pjsip_conf(d, pbx, tls=tls)),
        RenderedFile("pjsip_auth.conf", pjsip_auth_conf(d, secrets.desk_phones, secrets.carrier),
                     private=True),
        RenderedFile("extensions.conf", extensions_conf(d, pbx, announcement)),
        RenderedFile("voicemail.conf", voicemail_conf(d)),
        RenderedFile("geolocation.conf", geolocation_conf(d, pbx)),
        RenderedFile("cdr.conf", cdr_conf()),
        RenderedFile("manager.conf", manager_conf(pbx, secrets.ami), private=True),
        RenderedFile("res_parking.conf", res_parking_conf(d)),
        RenderedFile("musiconhold.conf", musiconhold_conf(announcement)),
    ]
