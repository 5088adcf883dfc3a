"""extensions.conf's desk-phone side: calls out (911 first), the admins' feature codes,
blind transfers, call parking and ``encryption: required``.  Pure; see
backline/render/asterisk_dialplan.py for the carrier's side and the decisions."""

from __future__ import annotations

from backline.core.connections import AsteriskPbx
from backline.core.emergency import caller_id_name
from backline.core.emergency import emergency_callers as callers_of
from backline.core.model import Directory
from backline.pbx import names as shared
from backline.pbx.asterisk import dialplan_variables as v
from backline.render.asterisk_dialplan_steps import agi, decided, var
from backline.render.asterisk_pjsip import carrier_endpoint, emergency_endpoint, location_site
from backline.render.asterisk_srtp import SECURE_DESK_CONTEXT, clear_emergency_endpoint


def _feature_code(code: str, action: str, lamp: bool) -> str:
    hint = f"exten => {code},hint,{v.LAMP}\n" if lamp else ""
    return (f"{hint}exten => {code},1,Set({v.FEATURE_ACTION}={action})\n"
            f" same => n,Goto({v.FEATURE_CONTEXT},s,1)")


def _emergency(d: Directory, pbx: AsteriskPbx) -> str:
    """911 and the other emergency numbers, straight out: ``Dial()`` is the first and only
    step before the carrier's INVITE, as in a dialplan that does nothing else (each step
    costs Asterisk a channel snapshot and, to a logged-in AMI, events: bench/emergency.py).
    Dial's ``f()`` presents the callback number and the practice's caller-ID name on the
    carrier's channel alone (its connected line: From and P-Asserted-Identity), from the
    values the desk phone's endpoint put on its channel (set_var); the phone's own caller
    ID stays its extension.  Nothing waits on the controller, which learns of the call from
    Asterisk's own DialBegin after the carrier's INVITE is out
    (backline.pbx.asterisk.emergency_leg), or from the call record, by its context and
    number (backline.pbx.asterisk.cdr).  The carrier's channel keeps what Dial dialled it
    with (DIALEDPEERNUMBER, ``911@endpoint``), so an attended transfer of a caller to it is
    known to be to 911 and never undone (backline.pbx.asterisk.events)."""
    presents = f",,f({var(v.EMERGENCY_NAME)} <{var(v.EMERGENCY_CALLBACK)}>)"
    return "\n".join(
        f"; {e}: emergency, never through the controller (no step before Dial)\n"
        f"exten => {e},1,Dial(PJSIP/{e}@{emergency_endpoint(pbx)}{presents})\n"
        f"{_in_the_clear(pbx, e, presents)}"
        f" same => n,Hangup()" for e in d.emergency_numbers)


def _in_the_clear(pbx: AsteriskPbx, number: str, options: str = "") -> str:
    """``trunk.srtp``: a 911 call the carrier would not take as SRTP (488: the call did not
    go through) is sent again with plain RTP: the practice's policy never fails it."""
    if not pbx.trunk.srtp:
        return ""
    failed = '$["${DIALSTATUS}" = "CHANUNAVAIL" | "${DIALSTATUS}" = "CONGESTION"]'
    return (f" same => n,ExecIf({failed}?Dial(PJSIP/{number}@"
            f"{clear_emergency_endpoint(carrier_endpoint(pbx))}{options}))\n")


def emergency_callers(d: Directory, pbx: AsteriskPbx) -> str:
    """[globals] lines: each desk phone's callback number, caller-ID name and (with
    ``trunk.geolocation``) location by its name, for a blind transfer to 911, which runs on
    the caller's channel, not the phone's."""
    return "\n".join(
        f"{v.EMERGENCY_CALLBACK}_{c.desk_phone}={c.callback}\n"
        f"{v.EMERGENCY_NAME}_{c.desk_phone}={c.caller_id_name}"
        + (f"\n{v.EMERGENCY_LOCATION}_{c.desk_phone}={location_site(c.location)}"
           if pbx.trunk.geolocation and c.location is not None else "")
        for c in callers_of(d))


def _located(pbx: AsteriskPbx) -> str:
    """``trunk.geolocation``: the transferring phone's location on the caller's channel, as
    its own endpoint's profile puts it on its own 911 (geolocation.conf), passed on to the
    911 channel; a phone with none sends none."""
    if not pbx.trunk.geolocation:
        return ""
    site = f"${{{v.EMERGENCY_LOCATION}_{var(v.EMERGENCY_PHONE)}}}"
    return (f' same => n,ExecIf($["{site}" != ""]?'
            f"Set(GEOLOC_PROFILE(location_reference,r)={site}))\n"
            f' same => n,ExecIf($["{site}" != ""]?Set(GEOLOC_PROFILE(inheritable)=true))\n')


def _emergency_transfer(d: Directory, pbx: AsteriskPbx) -> str:
    """A blind transfer of the caller to 911 (or another emergency number): straight out as
    the transferring desk phone's own 911 would go, before anything asks the controller.
    BLINDTRANSFER names that phone's channel (``PJSIP/ENDPOINT-0000002a``, or its SRTP
    twin's); its callback number and name come from [globals] (else the number the call
    came in on), presented on the emergency channel alone, as a transfer out presents
    the number's.  The phone's name is the caller's account code: the controller reads it
    from the call's DialBegin (backline.pbx.asterisk.emergency_leg) or the CDR, and only
    learns; the CDR's userfield keeps the number the call came in on."""
    phone, n = var(v.EMERGENCY_PHONE), len(v.SRTP_TWIN)
    cid, name = var(v.TRANSFER_CID_NUM), var(v.TRANSFER_CID_NAME)
    presents = f",,b({v.TRANSFER_CID_CONTEXT}^s^1)"
    return "\n".join(
        f"; {e}: a blind transfer to emergency, never through the controller\n"
        f"exten => {e},1,Set({v.EMERGENCY_PHONE}=${{BLINDTRANSFER:6:-9}})\n"
        f' same => n,ExecIf($["${{{v.EMERGENCY_PHONE}:-{n}}}" = "{v.SRTP_TWIN}"]?'
        f"Set({v.EMERGENCY_PHONE}=${{{v.EMERGENCY_PHONE}:0:-{n}}}))\n"
        f" same => n,Set(_{v.TRANSFER_CID_NUM}=${{{v.EMERGENCY_CALLBACK}_{phone}}})\n"
        f' same => n,ExecIf($["{cid}" = ""]?Set(_{v.TRANSFER_CID_NUM}={var(v.DIALED)}))\n'
        f" same => n,Set(_{v.TRANSFER_CID_NAME}=${{{v.EMERGENCY_NAME}_{phone}}})\n"
        f' same => n,ExecIf($["{name}" = ""]?Set(_{v.TRANSFER_CID_NAME}={caller_id_name(d)}))\n'
        f" same => n,Set(CHANNEL(accountcode)={phone})\n"
        f"{_located(pbx)}"
        f" same => n,Dial(PJSIP/{e}@{emergency_endpoint(pbx)}{presents})\n"
        f"{_in_the_clear(pbx, e, presents)}"
        f" same => n,Hangup()" for e in d.emergency_numbers)


def secure_desk(d: Directory, pbx: AsteriskPbx) -> str:
    """``encryption: required``: a desk phone's call signalled over plain SIP (UDP) carries
    its SRTP key where anyone on the LAN reads it, and one offered plain RTP (the endpoint
    takes such an offer, media_encryption_optimistic, so that 911 is never refused by
    PJSIP before the dialplan runs) would cross the LAN audible: either is refused (cause
    58: 488 Not Acceptable Here), logged and told to the controller (the desk phone's name,
    never the number dialled), except to an emergency number, which is never refused."""
    if not d.any_srtp():
        return ""
    emergency = "\n".join(f"exten => {e},1,Goto({v.DESK_CONTEXT},{e},1)"
                          for e in d.emergency_numbers)
    refused = (f"desk phone ${{CHANNEL(endpoint)}}: call refused: TLS and SRTP "
               f"{var(v.SEALED)} of 11 (encryption: required)")
    return f"""
; encryption: required. Desk phones' calls enter here: over TLS with SRTP on to {v.DESK_CONTEXT}.
[{SECURE_DESK_CONTEXT}]
{emergency}
; Progress() answers the offer (183): only then does CHANNEL(rtp,secure) say what was agreed.
exten => _[*+0-9].,1,Progress()
 same => n,Set({v.SEALED}=${{CHANNEL(pjsip,secure)}}${{CHANNEL(rtp,secure)}})
 same => n,GotoIf($["{var(v.SEALED)}" = "11"]?{v.DESK_CONTEXT},${{EXTEN}},1)
 same => n,Goto({SECURE_DESK_CONTEXT}-refused,s,1)

; Logged at extension s: Log() names the extension, and the number dialled stays out.
[{SECURE_DESK_CONTEXT}-refused]
exten => s,1,Log(WARNING,{refused})
 same => n,UserEvent({v.UNSEALED_EVENT},Phone: ${{CHANNEL(endpoint)}},Sealed: {var(v.SEALED)})
 same => n,Hangup(58)
"""


def desk_side(d: Directory, pbx: AsteriskPbx) -> str:
    return f"""
; Desk phones calling out. 911 first and directly: it never waits on the controller.
[{v.DESK_CONTEXT}]
{_emergency(d, pbx)}
; The outage switch for admins: *28 engages, *29 ends, each after the PIN. The lamp (BLF)
; on every desk phone watches the same custom device state.
{_feature_code(shared.ENGAGE_CODE, shared.ENGAGE, lamp=True)}
{_feature_code(shared.END_CODE, shared.END, lamp=True)}
; The hours override for admins: *26 forces closed, *27 open, each after the PIN, until the
; next scheduled change of the hours.
{_feature_code(shared.HOURS_CLOSED_CODE, shared.HOURS_CLOSED, lamp=False)}
{_feature_code(shared.HOURS_OPEN_CODE, shared.HOURS_OPEN, lamp=False)}
{_park_codes(d)}
exten => _[*+0-9].,1,Set({v.DECISION}=)
 same => n,{agi(v.AGI_OUTBOUND, "${CHANNEL(endpoint)}", "${FILTER(*#+0-9,${EXTEN})}")}
{decided(f"{v.context(v.REFUSE)},s,1")}

[{v.FEATURE_CONTEXT}]
exten => s,1,Answer()
 same => n,Read({v.PIN},vm-password,12,,1,10)
 same => n,Set({v.FEATURE_RESULT}=)
 same => n,Set({v.PIN}=${{FILTER(0-9,{var(v.PIN)})}})
 same => n,Set({v.ARGS}=${{CHANNEL(endpoint)}},{var(v.FEATURE_ACTION)})
 same => n,{agi(v.AGI_FEATURE, var(v.ARGS), var(v.PIN))}
 same => n,GotoIf($["{var(v.FEATURE_RESULT)}" != "ok"]?refused)
 same => n,Set({v.SWITCHED_ON}=${{REGEX("^({shared.ENGAGE}|{shared.HOURS_CLOSED})$" \
{var(v.FEATURE_ACTION)})}})
 same => n,Playback(${{IF({var(v.SWITCHED_ON)}?activated:de-activated)}})
 same => n,Hangup()
 same => n(refused),Playback(auth-incorrect)
 same => n,Hangup()
"""


def transfers(d: Directory, pbx: AsteriskPbx) -> str:
    """A desk phone's blind transfer (REFER) of an outside call, and where it sends the
    caller: the target's desk phones, or out from the number; unanswered, the voicemail."""
    ring, out = v.context(v.TRANSFER_RING), v.context(v.TRANSFER_OUT)
    return f"""\
; A desk phone's blind transfer (REFER) of an outside call: the caller's channel comes here
; with the digits the phone sent; BLINDTRANSFER names the transferring phone's channel, and
; the number and caller are the ones this call came in with.  Without the controller the
; caller goes to the number's voicemail, never into silence.  (\\x2d: a literal - in FILTER.)
[{v.TRANSFER_CONTEXT}]
{_emergency_transfer(d, pbx)}
{_park_key(d)}
exten => _[*+0-9].,1,Set({v.DECISION}=)
 same => n,Set({v.ARGS}=${{FILTER(A-Za-z0-9/._\\x2d,${{BLINDTRANSFER}})}})
 same => n,Set({v.ARGS}={var(v.ARGS)},${{FILTER(*#+0-9,${{EXTEN}})}})
 same => n,Set({v.ARGS}={var(v.ARGS)},{var(v.DIALED)},{var(v.CALLER)})
 same => n,{agi(v.AGI_TRANSFER, var(v.ARGS))}
{decided(f"{ring},s,vm")}
exten => _[a-zA-Z].,1,Goto({ring},s,vm)

; The transferred caller rings the target's desk phones (or, refused, the transferring user's
; again); unanswered, the number's voicemail.
[{ring}]
exten => s,1,GotoIf($["{var(v.DIAL)}" = ""]?vm)
 same => n,Dial({var(v.DIAL)},{var(v.RING_SECONDS)})
 same => n,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?done)
 same => n(vm),GotoIf($["{var(v.VOICEMAIL_BOX)}" = ""]?{v.context(v.REFUSE)},s,1)
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
 same => n(done),Hangup()

; The transferred caller goes out from the number, with its caller ID on the carrier's
; channel alone (the caller's own stays theirs); unanswered, the number's voicemail.
[{out}]
exten => s,1,Set(_{v.TRANSFER_CID_NUM}={var(v.CALLER_ID_NUM)})
 same => n,Set(_{v.TRANSFER_CID_NAME}={var(v.CALLER_ID_NAME)})
 same => n,Dial(PJSIP/{var(v.DIAL_TO)}@{carrier_endpoint(pbx)},,b({v.TRANSFER_CID_CONTEXT}^s^1))
 same => n,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?done)
 same => n,Goto({ring},s,vm)
 same => n(done),Hangup()

; On the carrier's new channel, before it is called: what it presents (From and
; P-Asserted-Identity) is its connected line, copied from the caller's; the number's replaces it.
[{v.TRANSFER_CID_CONTEXT}]
exten => s,1,Set(CONNECTEDLINE(num,i)={var(v.TRANSFER_CID_NUM)})
 same => n,Set(CONNECTEDLINE(name,i)={var(v.TRANSFER_CID_NAME)})
 same => n,Return()
"""


PARKING_LOT = "default"  # Park() and the phones' park keys use it without naming it
PARKED_CONTEXT = "backline-parked"  # the lot's own context: its hints are park:SLOT@this
PARK_TIMEOUT_CONTEXT = "backline-park-timeout"


def _park_codes(d: Directory) -> str:
    """For the desk phones: the park extension, each slot to pick up, and each slot's hint
    (``park:SLOT@CONTEXT``, res_parking's device state) for BLF keys."""
    park = d.park
    if park is None:
        return "; no call parking (no park: section)"
    codes = [f"; Call parking: {park.extension} parks the call in the first free slot, a slot "
             "picks it up;", "; a BLF key on a slot shows it occupied.",
             _park_extension(park.extension)]
    for slot in park.slots:
        codes += [f"exten => {slot},hint,park:{slot}@{PARKED_CONTEXT}",
                  f"exten => {slot},1,ParkedCall({PARKING_LOT},{slot})"]
    return "\n".join(codes)


def _park_key(d: Directory) -> str:
    """For a blind transfer: the park key is a transfer to the park extension (before the
    pattern that asks the controller)."""
    if d.park is None:
        return "; no call parking"
    return (f"; The park key (a blind transfer to {d.park.extension}) parks the caller.\n"
            + _park_extension(d.park.extension))


def _park_extension(extension: str) -> str:
    """Park() at priority 2, not 1: at 1 Asterisk takes a blind transfer to it as a park of
    its own, queued on the caller's bridge, and a phone that hangs up right after its REFER
    is accepted (as many do) dissolves that bridge first, hanging the caller up.  Run from
    the dialplan, the caller parks itself, and Park() takes the transferring phone from
    BLINDTRANSFER as the parker (its ring-back); ``s``: the caller hears no slot number."""
    return (f"exten => {extension},1,NoOp(park)\n"
            f" same => n,Park({PARKING_LOT},s)")


def _ring_through_twin(d: Directory) -> str:
    """A phone whose media must be SRTP is rung through its twin (dialplan_variables
    .SRTP_TWIN), whichever of the two parked the call."""
    if not d.any_srtp():
        return ""
    n, ring, twin = len(v.SRTP_TWIN), var(v.RING_ENDPOINT), v.SRTP_TWIN
    return (f' same => n,ExecIf($["${{{v.RING_ENDPOINT}:-{n}}}" = "{twin}"]?'
            f"Set({v.RING_ENDPOINT}=${{{v.RING_ENDPOINT}:0:-{n}}}))\n"
            f' same => n,ExecIf($["${{PJSIP_ENDPOINT({ring}{twin},aors)}}" != ""]?'
            f"Set({v.RING_ENDPOINT}={ring}{twin}))\n")


def park_timeout(d: Directory, pbx: AsteriskPbx) -> str:
    """Where a parked call nobody picked up comes (res_parking.conf's comebackcontext, with
    the parker's flattened name as the extension): ``PARKER`` is the dial string of the
    phone that parked it (``PJSIP/ENDPOINT``, one of ours).  Every registration of its login
    rings (PJSIP_DIAL_CONTACTS): ``Dial(PJSIP/ENDPOINT)`` calls only one of them, perhaps a
    phone that hung up after its transfer.  Unanswered there too, the number's voicemail,
    never silence."""
    if d.park is None:
        return ""
    return f"""
; A parked call nobody picked up within park.timeout rings back the phone that parked it,
; then goes to the number's voicemail.
[{PARK_TIMEOUT_CONTEXT}]
exten => _[A-Za-z0-9].,1,GotoIf($["${{PARKER:0:6}}" != "PJSIP/"]?vm)
 same => n,Set({v.RING_ENDPOINT}=${{PARKER:6}})
{_ring_through_twin(d)} same => n,Set({v.DIAL}=${{PJSIP_DIAL_CONTACTS({var(v.RING_ENDPOINT)})}})
 same => n,ExecIf($["{var(v.DIAL)}" != ""]?Dial({var(v.DIAL)},{pbx.ring_seconds}))
 same => n(vm),GotoIf($["{var(v.VOICEMAIL_BOX)}" = ""]?{v.context(v.REFUSE)},s,1)
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
exten => s,1,Goto({v.context(v.VOICEMAIL)},s,1)
"""
