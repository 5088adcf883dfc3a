"""Asterisk configuration rendered from the practice directory: pure, config in, text out.

Who rings and who may call is decided by the controller over FastAGI; the dialplan only
carries out a decision (``BACKLINE_ACTION`` and its variables, set by us with values we
generated) and, when the controller cannot be reached, falls back on its own: callers hear
the outage announcement, fax numbers still receive, and 911 never depends on the controller.

Untrusted text (caller IDs, dialled strings) is never written into these files; what is
written (desk-phone names, numbers, caller-ID names) was validated by the config loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from backline.core.connections import AsteriskPbx
from backline.core.emergency import emergency_callers
from backline.core.model import Carry, Directory, Location
from backline.pbx.asterisk import dialplan_variables as v

# Contexts: desk phones and the carrier enter here; everything else is internal.
CARRIER_CONTEXT = "backline-carrier"
DESK_CONTEXT = v.DESK_CONTEXT
VOICEMAIL_CONTEXT = "backline"
# Where ReceiveFax writes, in the PBX's own spool directory: it exists on every Asterisk (for
# a chroot instance, inside the root), so the PBX receives with or without the controller,
# which knows the same name from the call's uniqueid (backline.core.fax_intake.spool_name).
FAX_SPOOL_FILE = "${ASTSPOOLDIR}/fax-${UNIQUEID}.tif"
# What of a caller ID reaches the controller (FILTER's ranges; commas cannot be in it) and
# how much: an E.164 number is 16 characters, "anonymous" and the like fit too.
CALLER_CHARS = "+*#0-9A-Za-z"
MAX_CALLER = 64


def carrier_endpoint(pbx: AsteriskPbx) -> str:
    """The carrier's endpoint name: its From user when it is recognised by that."""
    return pbx.trunk.from_user or "carrier"


def emergency_endpoint(pbx: AsteriskPbx) -> str:
    """Where 911 calls go out: the carrier, or with ``trunk.geolocation`` an outbound-only
    twin of it that sends the caller's location, so that no other call ever carries it."""
    carrier = carrier_endpoint(pbx)
    return f"{carrier}-911" if pbx.trunk.geolocation else carrier


def location_profile(location: Location) -> str:
    return f"backline-at-{location.id}"


@dataclass(frozen=True, slots=True)
class AsteriskSecrets:
    """Secrets rendered into the 0600 files: never part of the directory objects."""

    ami: str
    desk_phones: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RenderedFile:
    name: str
    text: str
    private: bool = False  # holds a secret: written 0600


def _numbers_as_dialled(e164: str) -> tuple[str, ...]:
    """The spellings a carrier may put in the Request-URI for one of our numbers."""
    digits = e164.lstrip("+")
    forms = [e164, digits]
    if e164.startswith("+1"):
        forms.append(digits[1:])
    return tuple(forms)


def pjsip_conf(d: Directory, pbx: AsteriskPbx, proxy: str = "") -> str:
    """pjsip.conf; ``proxy`` is Kamailio's address when one sits in front of the nodes: every
    carrier INVITE then arrives from it, so it identifies the carrier too (Kamailio itself
    refuses INVITEs that did not come from the carrier)."""
    trunk = pbx.trunk
    carrier = carrier_endpoint(pbx)
    out = [
        "; Rendered by `backline render`: edit the practice YAML, not this file.",
        "[global]",
        "type=global",
        "user_agent=Backline PBX",
        # Credentials before names, names before addresses.  A desk phone's first request
        # carries no credentials and its From names its login: the login's gate endpoint
        # (below) is found by that name and challenges; the answer names the desk phone,
        # found by its digest user before the login's name or the carrier's address is
        # tried.  Were the address tried while nothing else matched, a desk phone on the
        # carrier's address (one host, all on loopback) would be taken for the carrier.
        "endpoint_identifier_order=auth_username,username,ip",
        "",
        "[transport-udp]",
        "type=transport",
        "protocol=udp",
        f"bind={pbx.sip.host}:{pbx.sip.port}",
        "",
        "; Desk phones: one endpoint and auth per phone, one AOR per login (user), so that a",
        "; login holds at most devices.max_per_login registrations and the oldest is dropped.",
        "[desk-phone](!)",
        "type=endpoint",
        f"context={DESK_CONTEXT}",
        "disallow=all",
        "allow=ulaw,alaw",
        "direct_media=no",
        "rtp_symmetric=yes",
        "force_rport=yes",
        # RTP on the SIP address, not the wildcard: on 0.0.0.0 Asterisk resolves its own host
        # name (and then a root server) for every call's RTCP, off the machine, and a lost
        # query stalls the PJSIP thread for the resolver's timeout.
        f"media_address={pbx.sip.host}",
        "bind_rtp_to_media_address=yes",
        "rewrite_contact=no",  # desk phones are on the practice LAN; their Contact is true
        "identify_by=username,auth_username",
        "send_pai=yes",
        "",
        "[login](!)",
        "type=aor",
        f"max_contacts={d.max_per_login}",
        "remove_existing=yes",
        "qualify_frequency=0",
        "",
        "; The carrier trunk: inbound calls from it go to the controller; outbound calls go",
        "; to it with the practice number's caller ID (From and P-Asserted-Identity).",
        f"[{carrier}]",
        "type=endpoint",
        f"context={CARRIER_CONTEXT}",
        "disallow=all",
        "allow=ulaw,alaw",
        "direct_media=no",
        "rtp_symmetric=yes",
        f"aors={carrier}",
        "send_pai=yes",
        "trust_id_outbound=yes",
        "trust_id_inbound=no",
        f"media_address={pbx.sip.host}",
        "bind_rtp_to_media_address=yes",
        "t38_udptl=yes",
        "t38_udptl_ec=redundancy",
        "t38_udptl_maxdatagram=400",
        # A fax machine calling a number taken as voice is heard by its calling tone (CNG,
        # which SendFax and fax machines send from the start) and sent to the `fax`
        # extension of the voice contexts; after 30 s of a call nobody listens any more.
        "fax_detect=yes",
        "fax_detect_timeout=30",
        f"identify_by={'username' if trunk.from_user else 'ip'}",
        "",
        f"[{carrier}]",
        "type=aor",
        f"contact=sip:{trunk.host}:{trunk.port}",
        "",
    ]
    if trunk.geolocation:
        out += ["; 911 only: the carrier again, outbound, with the location the desk phone's",
                "; profile put on the call (PIDF-LO by value).  identify_by=ip and no identify",
                "; section: no inbound call is ever matched to it.",
                f"[{emergency_endpoint(pbx)}]", "type=endpoint", f"context={CARRIER_CONTEXT}",
                "disallow=all", "allow=ulaw,alaw", "direct_media=no", "rtp_symmetric=yes",
                f"aors={carrier}", "send_pai=yes", "trust_id_outbound=yes",
                "trust_id_inbound=no", f"media_address={pbx.sip.host}",
                "bind_rtp_to_media_address=yes", "identify_by=ip",
                "geoloc_outgoing_call_profile=<prefer_incoming>", ""]
    if not trunk.from_user:
        out += [f"[{carrier}-identify]", "type=identify", f"endpoint={carrier}",
                f"match={trunk.host}{f',{proxy}' if proxy and proxy != trunk.host else ''}",
                ""]
    # What each desk phone presents on a 911 call (validated by the loader: E.164, and a
    # caller-ID name of plain characters), set on its channel by the endpoint itself.
    emergency = {c.desk_phone: c for c in emergency_callers(d)}
    for user in d.users:
        if not user.active:
            continue  # a deactivated user's phones are not provisioned at all
        out += [f"[{user.id}](login)", ""]
        for phone in user.desk_phones:
            out += [f"[{phone}](desk-phone)", f"aors={user.id}", f"auth={phone}-auth",
                    f"callerid={user.name.replace(chr(34), '')[:40]} <{user.extension}>"
                    if user.extension else f"callerid={phone}"]
            caller = emergency.get(phone)
            if caller is not None:
                out += [f"set_var={v.EMERGENCY_CALLBACK}={caller.callback}",
                        f"set_var={v.EMERGENCY_NAME}={caller.caller_id_name}"]
                if trunk.geolocation and caller.location is not None:
                    # Rendered for every location below: a profile name that does not exist
                    # would keep the endpoint from loading at all (no 911 from that phone).
                    out.append(f"geoloc_incoming_call_profile="
                               f"{location_profile(caller.location)}")
            out.append("")
        if user.desk_phones and user.id not in user.desk_phones:
            out += _login_gate(user.id, user.desk_phones[0])
    out.append("#include pjsip_auth.conf")
    return "\n".join(out) + "\n"


def _login_gate(login: str, first_phone: str) -> list[str]:
    """An endpoint named after a login, found by the From of a desk phone's first request
    (a REGISTER or INVITE from ``ana`` by the phone ``ana-desk``) only to challenge it.

    Without it that request names no endpoint, and when the carrier is recognised by address
    and shares it (one host), the carrier's ``ip`` rule took it: REGISTER got 404, INVITE went
    in as a carrier call.  The phone's answer carries its digest user, which the
    ``auth_username`` identifier (first in the order) matches to its own endpoint, so the gate
    never lets anything through; were it passed anyway, it has no AOR to register to and its
    calls are refused.  Its one auth (any of the login's) only makes the challenge."""
    return [f"[{login}]", "type=endpoint", "context=backline-refuse", "disallow=all",
            "allow=ulaw", "identify_by=username", f"auth={first_phone}-auth", ""]


def pjsip_auth_conf(d: Directory, secrets: AsteriskSecrets) -> str:
    out = ["; Desk-phone credentials: generated, kept outside the repo. Mode 0600."]
    for user in d.users:
        if not user.active:
            continue
        for phone in user.desk_phones:
            out += [f"[{phone}-auth]", "type=auth", "auth_type=userpass",
                    f"username={phone}", f"password={secrets.desk_phones[phone]}", ""]
    return "\n".join(out) + "\n"


def extensions_conf(d: Directory, pbx: AsteriskPbx, announcement: str) -> str:
    """``announcement``: the outage announcement's path as Asterisk plays it (no extension);
    the emergency notice clips lie beside it (``emergency-PHONE``)."""
    notice_sounds = announcement.rpartition("/")[0] or "."
    agi = f"agi://{pbx.agi.host}:{pbx.agi.port}"
    carrier = carrier_endpoint(pbx)
    fax_spellings = [s for n in d.numbers if Carry.FAX in n.carries
                     for s in _numbers_as_dialled(n.number)]
    # The callback number and the practice's caller-ID name replace the extension and the
    # person's name (From and P-Asserted-Identity follow the caller ID); the CDR mark and the
    # user event only tell the controller afterwards, neither waits on it.
    emergency = "\n".join(
        f"exten => {e},1,NoOp(emergency: never through the controller)\n"
        f" same => n,Set(CALLERID(num)=${{{v.EMERGENCY_CALLBACK}}})\n"
        f" same => n,Set(CALLERID(name)=${{{v.EMERGENCY_NAME}}})\n"
        f" same => n,Set(CDR(userfield)={v.EMERGENCY_MARK})\n"
        f" same => n,UserEvent({v.EMERGENCY_EVENT},Phone: ${{CHANNEL(endpoint)}},"
        f"Dialled: ${{EXTEN}})\n"
        f" same => n,Dial(PJSIP/{e}@{emergency_endpoint(pbx)})\n"
        f" same => n,Hangup()" for e in d.emergency_numbers)
    fax_lines = "\n".join(f"exten => {s},1,Return()" for s in fax_spellings) or \
        "; no number carries fax"
    unpack = "\n".join(
        f"{'exten => s,1' if i == 1 else ' same => n'},Set({name}="
        f"${{CUT({v.DECISION},{v.FIELD_SEPARATOR},{i})}})"
        for i, name in enumerate(v.FIELDS, start=1))
    return f"""\
; Rendered by `backline render`: edit the practice YAML, not this file.
[general]
static=yes
writeprotect=yes
clearglobalvars=yes

[globals]
BACKLINE_AGI={agi}
BACKLINE_ANNOUNCEMENT={announcement}

; Calls from the carrier. The controller decides; if it cannot be reached (AGISTATUS is not
; SUCCESS, or no decision came back) the PBX answers on its own: the announcement, or fax
; reception for a fax number.
; What the controller routes on comes as AGI arguments, filtered here: Asterisk writes the
; caller ID unescaped into the AGI header block, so a line break in it (a %0A in the From
; URI) could add header lines.  The caller ID and the number a call was diverted from
; (Diversion: agi_rdnis) on the channel are replaced by their filtered forms too (cut to 64
; characters), and a dialled string with anything but + and digits is no number of ours.
[{CARRIER_CONTEXT}]
exten => _[+0-9].,1,Set(BACKLINE_DECISION=)
 same => n,Set(BACKLINE_DIALED=${{FILTER(+0-9,${{EXTEN}})}})
 same => n,GotoIf($[${{LEN(${{EXTEN}})}} != ${{LEN(${{BACKLINE_DIALED}})}}]?backline-unknown,s,1)
 same => n,Set(BACKLINE_CALLER=${{FILTER({CALLER_CHARS},${{CALLERID(num)}})}})
 same => n,Set(BACKLINE_CALLER=${{BACKLINE_CALLER:0:{MAX_CALLER}}})
 same => n,Set(CALLERID(num)=${{BACKLINE_CALLER}})
 same => n,Set(BACKLINE_DIVERTED=${{FILTER({CALLER_CHARS},${{REDIRECTING(from-num)}})}})
 same => n,Set(REDIRECTING(from-num,i)=${{BACKLINE_DIVERTED:0:{MAX_CALLER}}})
 same => n,Set(CDR(userfield)=${{BACKLINE_DIALED}})
 same => n,Set(BACKLINE_FAILSAFE=announce)
 same => n,Set(BACKLINE_IS_FAX=${{DIALPLAN_EXISTS(backline-fax-numbers,${{BACKLINE_DIALED}},1)}})
 same => n,ExecIf(${{BACKLINE_IS_FAX}}?Set(BACKLINE_FAILSAFE=fax))
 same => n,AGI(${{BACKLINE_AGI}}/inbound,${{BACKLINE_DIALED}},${{BACKLINE_CALLER}})
 same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "${{BACKLINE_DECISION}}" != ""]?decided)
 same => n,Goto(backline-${{BACKLINE_FAILSAFE}},s,1)
 same => n(decided),Gosub(backline-unpack,s,1)
 same => n,Goto(backline-${{BACKLINE_ACTION}},s,1)
exten => _[a-zA-Z*#].,1,Goto(backline-unknown,s,1)
; A fax sender gone between the decision and the Goto is still reported, as a fax that ended.
exten => h,1,GotoIf($["${{BACKLINE_ACTION}}" = "fax"]?backline-fax,h,1)

[backline-fax-numbers]
{fax_lines}

; Desk phones calling out. 911 first and directly: it never waits on the controller.
[{DESK_CONTEXT}]
{emergency}
; The outage switch for admins: *28 engages, *29 ends, each after the PIN. The lamp (BLF)
; on every desk phone watches the same custom device state.
exten => *28,hint,Custom:backline-outage
exten => *28,1,Set(BACKLINE_FEATURE_ACTION=engage)
 same => n,Goto(backline-feature,s,1)
exten => *29,hint,Custom:backline-outage
exten => *29,1,Set(BACKLINE_FEATURE_ACTION=end)
 same => n,Goto(backline-feature,s,1)
; The hours override for admins: *26 forces closed, *27 open, each after the PIN, until the
; next scheduled change of the hours.
exten => *26,1,Set(BACKLINE_FEATURE_ACTION={v.HOURS_CLOSED})
 same => n,Goto(backline-feature,s,1)
exten => *27,1,Set(BACKLINE_FEATURE_ACTION={v.HOURS_OPEN})
 same => n,Goto(backline-feature,s,1)
exten => _[*+0-9].,1,Set(BACKLINE_DECISION=)
 same => n,AGI(${{BACKLINE_AGI}}/outbound,${{CHANNEL(endpoint)}},${{FILTER(*#+0-9,${{EXTEN}})}})
 same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "${{BACKLINE_DECISION}}" != ""]?decided)
 same => n,Goto(backline-refuse,s,1)
 same => n(decided),Gosub(backline-unpack,s,1)
 same => n,Goto(backline-${{BACKLINE_ACTION}},s,1)

[backline-feature]
exten => s,1,Answer()
 same => n,Read(BACKLINE_PIN,vm-password,12,,1,10)
 same => n,Set(BACKLINE_FEATURE=)
 same => n,Set(BACKLINE_PIN=${{FILTER(0-9,${{BACKLINE_PIN}})}})
 same => n,Set(BACKLINE_ARGS=${{CHANNEL(endpoint)}},${{BACKLINE_FEATURE_ACTION}})
 same => n,AGI(${{BACKLINE_AGI}}/feature,${{BACKLINE_ARGS}},${{BACKLINE_PIN}})
 same => n,GotoIf($["${{BACKLINE_FEATURE}}" != "ok"]?refused)
 same => n,Set(BACKLINE_ON=${{REGEX("^(engage|{v.HOURS_CLOSED})$" ${{BACKLINE_FEATURE_ACTION}})}})
 same => n,Playback(${{IF(${{BACKLINE_ON}}?activated:de-activated)}})
 same => n,Hangup()
 same => n(refused),Playback(auth-incorrect)
 same => n,Hangup()

; A decision arrives as one variable (one AGI round trip): cut it back into its fields.
[backline-unpack]
{unpack}
 same => n,Return()

; TRANSFER_CONTEXT, inherited by every desk phone rung: their transfer button (REFER) sends
; the caller to backline-transfer, where the controller decides.
[backline-ring]
exten => s,1,Set(__TRANSFER_CONTEXT={v.TRANSFER_CONTEXT})
 same => n,Dial(${{BACKLINE_DIAL}},${{BACKLINE_RING_SECONDS}})
 same => n,Goto(backline-voicemail,s,1)
exten => fax,1,Goto(backline-faxcall,s,1)

[backline-voicemail]
exten => s,1,Answer()
 same => n,VoiceMail(${{BACKLINE_VMBOX}}@{VOICEMAIL_CONTEXT},u)
 same => n,Hangup()
exten => fax,1,Goto(backline-faxcall,s,1)

[backline-voicemail-main]
exten => s,1,Answer()
 same => n,VoiceMailMain(${{BACKLINE_VMBOX}}@{VOICEMAIL_CONTEXT},s)
 same => n,Hangup()

[backline-announce]
exten => s,1,Answer()
 same => n,Playback(${{BACKLINE_ANNOUNCEMENT}})
 same => n,Hangup()
exten => fax,1,Goto(backline-faxcall,s,1)

; Closed (the number's hours): the closed announcement, then the number's voicemail.
[backline-{v.CLOSED}]
exten => s,1,Answer()
 same => n,Playback({notice_sounds}/${{{v.SOUND}}})
 same => n,Goto(backline-voicemail,s,1)
exten => fax,1,Goto(backline-faxcall,s,1)

; Closed, with an answering service: the call goes there from the number, with its caller ID.
[backline-{v.FORWARD}]
exten => s,1,Set(CALLERID(num)=${{BACKLINE_CID_NUM}})
 same => n,Set(CALLERID(name)=${{BACKLINE_CID_NAME}})
 same => n,Dial(PJSIP/${{BACKLINE_TO}}@{carrier})
 same => n,Hangup()

[backline-unknown]
exten => s,1,Answer()
 same => n,Playback(ss-noservice)
 same => n,Hangup()

; Fax tones on a call taken as voice (the `fax` extensions above, reached through the carrier
; endpoint's fax_detect): the controller decides again, as a fax.  Without it, a fax number
; still receives and any other number refuses.
[backline-faxcall]
exten => s,1,Set(BACKLINE_DECISION=)
 same => n,AGI(${{BACKLINE_AGI}}/fax,${{BACKLINE_DIALED}},${{BACKLINE_CALLER}})
 same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "${{BACKLINE_DECISION}}" != ""]?decided)
 same => n,Goto(backline-${{IF(${{BACKLINE_IS_FAX}}?fax:rejectfax)}},s,1)
 same => n(decided),Gosub(backline-unpack,s,1)
 same => n,Goto(backline-${{BACKLINE_ACTION}},s,1)

; T.38 when the sender can (the carrier endpoint offers it), G.711 audio otherwise (f).  The
; h extension reports every end (done, failed, the sender gone mid-page) to the controller,
; with res_fax's variables as arguments: the station ID (the sending machine chose it) and the
; error (spandsp's prose) are URI-encoded, so no comma or quote can split or bend the call.
[backline-fax]
exten => s,1,Goto(fax,1)
; Named `fax`: the carrier endpoint's fax_detect leaves a call in a fax extension alone.
exten => fax,1,Set(BACKLINE_FAX_FILE={FAX_SPOOL_FILE})
 same => n,Answer()
 same => n,ReceiveFax(${{BACKLINE_FAX_FILE}},f)
 same => n,Hangup()
exten => h,1,Set(BACKLINE_ARGS=${{BACKLINE_DIALED}},${{FAXSTATUS}},${{FAXPAGES}})
 same => n,Set(BACKLINE_ARGS=${{BACKLINE_ARGS}},${{URIENCODE(${{FAXERROR}})}})
 same => n,Set(BACKLINE_ARGS=${{BACKLINE_ARGS}},${{URIENCODE(${{REMOTESTATIONID}})}})
 same => n,AGI(${{BACKLINE_AGI}}/faxdone,${{BACKLINE_ARGS}},${{BACKLINE_CALLER}})

; Refused during the call: answered, then hung up once the sender's fax session has begun,
; so the sending machine reports a failed fax (a call refused unanswered is, to many, a
; busy line to redial at once).
[backline-rejectfax]
exten => s,1,Answer()
 same => n,Wait(1)
 same => n,Hangup(21)

[backline-call]
exten => s,1,Set(CALLERID(num)=${{BACKLINE_CID_NUM}})
 same => n,Set(CALLERID(name)=${{BACKLINE_CID_NAME}})
 same => n,Dial(PJSIP/${{BACKLINE_TO}}@{carrier})
 same => n,Hangup()

; A colleague's or a team's extension: their registered desk phones at once, with the
; caller's name and extension; unanswered, the call ends (never the carrier, in any mode).
[backline-{v.INTERNAL}]
exten => s,1,GotoIf($["${{BACKLINE_CID_NUM}}" = ""]?ring)
 same => n,Set(CALLERID(num)=${{BACKLINE_CID_NUM}})
 same => n,Set(CALLERID(name)=${{BACKLINE_CID_NAME}})
 same => n(ring),Dial(${{BACKLINE_DIAL}},${{BACKLINE_RING_SECONDS}})
 same => n,Hangup()

; A desk phone's blind transfer (REFER) of an outside call: the caller's channel comes here
; with the digits the phone sent; BLINDTRANSFER names the transferring phone's channel, and
; the number and caller are the ones this call came in with.  Without the controller the
; caller goes to the number's voicemail, never into silence.  (\\x2d: a literal - in FILTER.)
[{v.TRANSFER_CONTEXT}]
exten => _[*+0-9].,1,Set(BACKLINE_DECISION=)
 same => n,Set(BACKLINE_ARGS=${{FILTER(A-Za-z0-9/._\\x2d,${{BLINDTRANSFER}})}})
 same => n,Set(BACKLINE_ARGS=${{BACKLINE_ARGS}},${{FILTER(*#+0-9,${{EXTEN}})}})
 same => n,Set(BACKLINE_ARGS=${{BACKLINE_ARGS}},${{BACKLINE_DIALED}},${{BACKLINE_CALLER}})
 same => n,AGI(${{BACKLINE_AGI}}/transfer,${{BACKLINE_ARGS}})
 same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "${{BACKLINE_DECISION}}" != ""]?decided)
 same => n,Goto(backline-transfer-ring,s,vm)
 same => n(decided),Gosub(backline-unpack,s,1)
 same => n,Goto(backline-${{BACKLINE_ACTION}},s,1)
exten => _[a-zA-Z].,1,Goto(backline-transfer-ring,s,vm)

; The transferred caller rings the target's desk phones (or, refused, the transferring user's
; again); unanswered, the number's voicemail.
[backline-{v.TRANSFER_RING}]
exten => s,1,GotoIf($["${{BACKLINE_DIAL}}" = ""]?vm)
 same => n,Dial(${{BACKLINE_DIAL}},${{BACKLINE_RING_SECONDS}})
 same => n,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?done)
 same => n(vm),GotoIf($["${{BACKLINE_VMBOX}}" = ""]?backline-refuse,s,1)
 same => n,Goto(backline-voicemail,s,1)
 same => n(done),Hangup()

; The transferred caller goes out from the number, with its caller ID on the carrier's
; channel alone (the caller's own stays theirs); unanswered, the number's voicemail.
[backline-{v.TRANSFER_OUT}]
exten => s,1,Set(_{v.TRANSFER_CID_NUM}=${{BACKLINE_CID_NUM}})
 same => n,Set(_{v.TRANSFER_CID_NAME}=${{BACKLINE_CID_NAME}})
 same => n,Dial(PJSIP/${{BACKLINE_TO}}@{carrier},,b(backline-transfer-cid^s^1))
 same => n,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?done)
 same => n,Goto(backline-transfer-ring,s,vm)
 same => n(done),Hangup()

; On the carrier's new channel, before it is called: what it presents (From and
; P-Asserted-Identity) is its connected line, copied from the caller's; the number's replaces it.
[backline-transfer-cid]
exten => s,1,Set(CONNECTEDLINE(num,i)=${{{v.TRANSFER_CID_NUM}}})
 same => n,Set(CONNECTEDLINE(name,i)=${{{v.TRANSFER_CID_NAME}}})
 same => n,Return()

[backline-refuse]
exten => s,1,Answer()
 same => n,Playback(cannot-complete-as-dialed)
 same => n,Hangup()

; The on-site notice of a 911 call, to a desk phone the controller calls: which desk phone
; and where (rendered per phone), then the time; twice.
[{v.NOTICE_CONTEXT}]
exten => s,1,Answer()
 same => n,Wait(1)
 same => n,Set(BACKLINE_CLIP={notice_sounds}/emergency-${{{v.NOTICE_ABOUT}}})
 same => n,Playback(${{BACKLINE_CLIP}})
 same => n,SayUnixTime(${{{v.NOTICE_AT}}},{d.practice.timezone},IMp)
 same => n,Wait(1)
 same => n,Playback(${{BACKLINE_CLIP}})
 same => n,SayUnixTime(${{{v.NOTICE_AT}}},{d.practice.timezone},IMp)
 same => n,Hangup()
"""


def geolocation_conf(d: Directory, pbx: AsteriskPbx) -> str:
    """Each location as a civic address (RFC 5139 fields) and a profile desk phones there
    carry; the 911 endpoint sends it.  Empty unless ``trunk.geolocation`` is on."""
    out = ["; Rendered by `backline render`: edit the practice YAML, not this file."]
    if not pbx.trunk.geolocation:
        return "\n".join([*out, "; trunk.geolocation is off: no location is sent."]) + "\n"
    for loc in d.locations:
        number, _, street = loc.address.partition(" ")
        if not (number[:1].isdigit() and street):
            number, street = "", loc.address
        civic = [("country", loc.country), ("A1", loc.state), ("A3", loc.city),
                 ("HNO", number), ("RD", street), ("PC", loc.zip), ("LOC", loc.where)]
        # The loader allows no double quote in these; quoting keeps commas and spaces whole.
        fields = ", ".join(f'{k}="{value}"' for k, value in civic if value)
        out += ["", f"[backline-site-{loc.id}]", "type=location", "format=civicAddress",
                "method=Manual", f"location_info={fields}",
                "", f"[{location_profile(loc)}]", "type=profile",
                # What a desk phone sends itself is dropped: the practice's record wins.
                "profile_precedence=discard_incoming",
                f"location_reference=backline-site-{loc.id}"]
    return "\n".join(out) + "\n"


def voicemail_conf(d: Directory) -> str:
    out = ["; Rendered by `backline render`. One box per practice number; only its members",
           "; reach it (the controller checks membership before VoiceMailMain).",
           "[general]", "format=wav", "attach=no", "maxmsg=200", "maxsecs=180", "",
           f"[{VOICEMAIL_CONTEXT}]"]
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


QUIET_EVENTS = ("Newexten", "VarSet", "AGIExecStart", "AGIExecEnd", "NewConnectedLine",
                "NewCallerid", "NewAccountCode", "RTCPSent", "RTCPReceived")


def manager_conf(pbx: AsteriskPbx, secret: str) -> str:
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

[{pbx.ami_username}]
secret={secret}
deny=0.0.0.0/0.0.0.0
permit={pbx.ami.host}/255.255.255.255
read=system,call,agent,user,config,dtmf,reporting,dialplan,originate
write=system,call,agent,user,config,command,reporting,originate
"""


def render(d: Directory, secrets: AsteriskSecrets, announcement: str) -> list[RenderedFile]:
    """Every Asterisk file Backline owns, for the PBX in ``d.connections.pbx``."""
    pbx = d.connections.pbx
    if not isinstance(pbx, AsteriskPbx):
        raise ValueError("the config's PBX is not Asterisk")
    return [
        RenderedFile("pjsip.conf", pjsip_conf(d, pbx)),
        RenderedFile("pjsip_auth.conf", pjsip_auth_conf(d, secrets), private=True),
        RenderedFile("extensions.conf", extensions_conf(d, pbx, announcement)),
        RenderedFile("voicemail.conf", voicemail_conf(d)),
        RenderedFile("geolocation.conf", geolocation_conf(d, pbx)),
        RenderedFile("cdr.conf", cdr_conf()),
        RenderedFile("manager.conf", manager_conf(pbx, secrets.ami), private=True),
    ]
