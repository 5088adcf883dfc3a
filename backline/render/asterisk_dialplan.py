"""extensions.conf rendered from the practice directory: pure, config in, text out.

Who rings and who may call is decided by the controller over FastAGI; the dialplan only
carries out a decision (``BACKLINE_ACTION`` and its variables, set by us with values we
generated) and, when the controller cannot be reached, falls back on its own: callers hear
the outage announcement, fax numbers still receive, and 911 never depends on the controller.
Every name the driver also uses comes from ``backline.pbx.asterisk.dialplan_variables``.

Untrusted text (caller IDs, dialled strings) is never written into this file; what is written
(desk-phone names, numbers, caller-ID names) was validated by the config loader.
"""

from __future__ import annotations

from backline.core.connections import AsteriskPbx, Encryption
from backline.core.model import Carry, Directory
from backline.pbx import names as shared
from backline.pbx.asterisk import dialplan_variables as v
from backline.render.asterisk_pjsip import (
    SECURE_DESK_CONTEXT,
    carrier_endpoint,
    emergency_endpoint,
)

# Where ReceiveFax writes, in the PBX's own spool directory: it exists on every Asterisk (for
# a chroot instance, inside the root), so the PBX receives with or without the controller,
# which knows the same name from the call's uniqueid (backline.pbx.fax_intake.spool_name).
FAX_SPOOL_FILE = "${ASTSPOOLDIR}/" + shared.FAX_FILE.format(uuid="${UNIQUEID}")
# What of a caller ID reaches the controller (FILTER's ranges; commas cannot be in it) and
# how much: an E.164 number is 16 characters, "anonymous" and the like fit too.
CALLER_CHARS = "+*#0-9A-Za-z"
MAX_CALLER = 64


def var(name: str) -> str:
    """``${NAME}``: a variable's value, as the dialplan reads it."""
    return f"${{{name}}}"


def _numbers_as_dialled(e164: str) -> tuple[str, ...]:
    """The spellings a carrier may put in the Request-URI for one of our numbers."""
    digits = e164.lstrip("+")
    forms = [e164, digits]
    if e164.startswith("+1"):
        forms.append(digits[1:])
    return tuple(forms)


def _agi(script: str, *args: str) -> str:
    """An AGI step asking the controller's ``script`` (arguments already filtered)."""
    return f"AGI({var(v.AGI_URL)}/{script},{','.join(args)})"


def _decided(fallback: str) -> str:
    """After an AGI step: carry out the decision, or ``fallback`` (a Goto target) if none
    came back."""
    return (f' same => n,GotoIf($["${{AGISTATUS}}" = "SUCCESS" & "{var(v.DECISION)}" != ""]'
            f"?decided)\n"
            f" same => n,Goto({fallback})\n"
            f" same => n(decided),Gosub({v.UNPACK_CONTEXT},s,1)\n"
            f" same => n,Goto({v.CONTEXT_PREFIX}{var(v.ACTION)},s,1)")


def _feature_code(code: str, action: str, lamp: bool) -> str:
    hint = f"exten => {code},hint,{v.LAMP}\n" if lamp else ""
    return (f"{hint}exten => {code},1,Set({v.FEATURE_ACTION}={action})\n"
            f" same => n,Goto({v.FEATURE_CONTEXT},s,1)")


def _emergency(d: Directory, pbx: AsteriskPbx) -> str:
    """911 and the other emergency numbers, straight out.  The callback number and the
    practice's caller-ID name replace the extension and the person's name (From and
    P-Asserted-Identity follow the caller ID); the CDR mark and the user event only tell the
    controller afterwards, neither waits on it."""
    return "\n".join(
        f"exten => {e},1,NoOp(emergency: never through the controller)\n"
        f" same => n,Set(CALLERID(num)={var(v.EMERGENCY_CALLBACK)})\n"
        f" same => n,Set(CALLERID(name)={var(v.EMERGENCY_NAME)})\n"
        f" same => n,Set(CDR(userfield)={v.EMERGENCY_MARK})\n"
        f" same => n,UserEvent({v.EMERGENCY_EVENT},Phone: ${{CHANNEL(endpoint)}},"
        f"Dialled: ${{EXTEN}})\n"
        f" same => n,Dial(PJSIP/{e}@{emergency_endpoint(pbx)})\n"
        f" same => n,Hangup()" for e in d.emergency_numbers)


def extensions_conf(d: Directory, pbx: AsteriskPbx, announcement: str) -> str:
    """``announcement``: the outage announcement's path as Asterisk plays it (no extension);
    the emergency notice clips and the closed announcements lie beside it."""
    return (_carrier_side(d, pbx, announcement) + _desk_side(d, pbx)
            + _decisions(d, pbx, announcement) + _secure_desk(d, pbx)
            + _park_timeout(d, pbx))


def _secure_desk(d: Directory, pbx: AsteriskPbx) -> str:
    """``encryption: required``: a desk phone's call signalled over plain SIP (UDP) carries
    its SRTP key where anyone on the LAN reads it, so it is refused (cause 58: 488 Not
    Acceptable Here), except to an emergency number, which is never refused."""
    if pbx.encryption is not Encryption.REQUIRED:
        return ""
    emergency = "\n".join(f"exten => {e},1,Goto({v.DESK_CONTEXT},{e},1)"
                          for e in d.emergency_numbers)
    return f"""
; encryption: required. Desk phones' calls enter here: over TLS on to {v.DESK_CONTEXT}.
[{SECURE_DESK_CONTEXT}]
{emergency}
exten => _[*+0-9].,1,GotoIf(${{CHANNEL(pjsip,secure)}}?{v.DESK_CONTEXT},${{EXTEN}},1)
 same => n,Hangup(58)
"""


# Where a carrier call goes whose Request-URI names no number, and what it reads from To.
TO_CONTEXT = "backline-carrier-to"
TO_USER = "BACKLINE_TO_USER"
TO_NUMBER = "BACKLINE_TO_NUMBER"


def _carrier_side(d: Directory, pbx: AsteriskPbx, announcement: str) -> str:
    fax_spellings = [s for n in d.numbers if Carry.FAX in n.carries
                     for s in _numbers_as_dialled(n.number)]
    fax_lines = "\n".join(f"exten => {s},1,Return()" for s in fax_spellings) or \
        "; no number carries fax"
    fax_call = f"{v.context(v.FAX)},h,1"
    # A registration's contact is the account's user: all digits, it would pass for a number.
    user = pbx.trunk.username
    account = (f"exten => {user},1,Goto({TO_CONTEXT},s,1)\n"
               if pbx.trunk.register and user.lstrip("+").isdigit() else "")
    unknown = f"{v.context(v.UNKNOWN)},s,1"
    not_account = (f' same => n,GotoIf($["{var(TO_NUMBER)}" = "{user}"]?{unknown})\n'
                   if account else "")
    return f"""\
; Rendered by `backline render`: edit the practice YAML, not this file.
[general]
static=yes
writeprotect=yes
clearglobalvars=yes

[globals]
{v.AGI_URL}=agi://{pbx.agi.host}:{pbx.agi.port}
{v.ANNOUNCEMENT}={announcement}

; Calls from the carrier. The controller decides; if it cannot be reached (AGISTATUS is not
; SUCCESS, or no decision came back) the PBX answers on its own: the announcement, or fax
; reception for a fax number.
; What the controller routes on comes as AGI arguments, filtered here: Asterisk writes the
; caller ID unescaped into the AGI header block, so a line break in it (a %0A in the From
; URI) could add header lines.  The caller ID and the number a call was diverted from
; (Diversion: agi_rdnis) on the channel are replaced by their filtered forms too (cut to 64
; characters), and a dialled string with anything but + and digits is no number of ours.
[{v.CARRIER_CONTEXT}]
exten => _[+0-9].,1,Set({v.DECISION}=)
 same => n,Set({v.DIALED}=${{FILTER(+0-9,${{EXTEN}})}})
 same => n,GotoIf($[${{LEN(${{EXTEN}})}} != ${{LEN({var(v.DIALED)})}}]?{v.context(v.UNKNOWN)},s,1)
 same => n,Set({v.CALLER}=${{FILTER({CALLER_CHARS},${{CALLERID(num)}})}})
 same => n,Set({v.CALLER}=${{{v.CALLER}:0:{MAX_CALLER}}})
 same => n,Set(CALLERID(num)={var(v.CALLER)})
 same => n,Set({v.DIVERTED}=${{FILTER({CALLER_CHARS},${{REDIRECTING(from-num)}})}})
 same => n,Set(REDIRECTING(from-num,i)=${{{v.DIVERTED}:0:{MAX_CALLER}}})
 same => n,Set(CDR(userfield)={var(v.DIALED)})
 same => n,Set({v.FAILSAFE}={v.ANNOUNCE})
 same => n,Set({v.IS_FAX}=${{DIALPLAN_EXISTS({v.FAX_NUMBERS_CONTEXT},{var(v.DIALED)},1)}})
 same => n,ExecIf({var(v.IS_FAX)}?Set({v.FAILSAFE}={v.FAX}))
 same => n,{_agi(v.AGI_INBOUND, var(v.DIALED), var(v.CALLER))}
{_decided(f"{v.CONTEXT_PREFIX}{var(v.FAILSAFE)},s,1")}
; No number in the Request-URI (a registration's contact, or no user part at all): the
; carrier named it in To, as many do on registered trunks.
exten => s,1,Goto({TO_CONTEXT},s,1)
exten => _[a-zA-Z*#].,1,Goto({TO_CONTEXT},s,1)
{account}; A fax sender gone between the decision and the Goto is still reported, as a fax
; that ended.
exten => h,1,GotoIf($["{var(v.ACTION)}" = "{v.FAX}"]?{fax_call})

; The number from To's user part (sip: or tel:, with or without parameters), taken only when
; it is + and digits and nothing else; anything else is no number of ours.
[{TO_CONTEXT}]
exten => s,1,Set({TO_USER}=${{PJSIP_HEADER(read,To)}})
 same => n,Set({TO_USER}=${{PJSIP_PARSE_URI_FROM({TO_USER},user)}})
 same => n,Set({TO_NUMBER}=${{FILTER(+0-9,{var(TO_USER)})}})
 same => n,GotoIf($["{var(TO_NUMBER)}" = ""]?{unknown})
 same => n,GotoIf($[${{LEN({var(TO_USER)})}} != ${{LEN({var(TO_NUMBER)})}}]?{unknown})
{not_account} same => n,Goto({v.CARRIER_CONTEXT},{var(TO_NUMBER)},1)

[{v.FAX_NUMBERS_CONTEXT}]
{fax_lines}
"""


def _desk_side(d: Directory, pbx: AsteriskPbx) -> str:
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
 same => n,{_agi(v.AGI_OUTBOUND, "${CHANNEL(endpoint)}", "${FILTER(*#+0-9,${EXTEN})}")}
{_decided(f"{v.context(v.REFUSE)},s,1")}

[{v.FEATURE_CONTEXT}]
exten => s,1,Answer()
 same => n,Read({v.PIN},vm-password,12,,1,10)
 same => n,Set({v.FEATURE_RESULT}=)
 same => n,Set({v.PIN}=${{FILTER(0-9,{var(v.PIN)})}})
 same => n,Set({v.ARGS}=${{CHANNEL(endpoint)}},{var(v.FEATURE_ACTION)})
 same => n,{_agi(v.AGI_FEATURE, var(v.ARGS), var(v.PIN))}
 same => n,GotoIf($["{var(v.FEATURE_RESULT)}" != "ok"]?refused)
 same => n,Set({v.SWITCHED_ON}=${{REGEX("^({shared.ENGAGE}|{shared.HOURS_CLOSED})$" \
{var(v.FEATURE_ACTION)})}})
 same => n,Playback(${{IF({var(v.SWITCHED_ON)}?activated:de-activated)}})
 same => n,Hangup()
 same => n(refused),Playback(auth-incorrect)
 same => n,Hangup()
"""


def _decisions(d: Directory, pbx: AsteriskPbx, announcement: str) -> str:
    """The contexts that carry out each decision (``backline-ACTION``), the fax contexts
    and the 911 notice."""
    notice_sounds = announcement.rpartition("/")[0] or "."
    carrier = carrier_endpoint(pbx)
    unpack = "\n".join(
        f"{'exten => s,1' if i == 1 else ' same => n'},Set({name}="
        f"${{CUT({v.DECISION},{v.FIELD_SEPARATOR},{i})}})"
        for i, name in enumerate(v.FIELDS, start=1))
    fax_call = f"exten => {v.FAX_EXTENSION},1,Goto({v.FAX_CALL_CONTEXT},s,1)"
    place_call = (f"exten => s,1,Set(CALLERID(num)={var(v.CALLER_ID_NUM)})\n"
                  f" same => n,Set(CALLERID(name)={var(v.CALLER_ID_NAME)})\n"
                  f" same => n,Dial(PJSIP/{var(v.DIAL_TO)}@{carrier})\n"
                  f" same => n,Hangup()")
    return f"""
; A decision arrives as one variable (one AGI round trip): cut it back into its fields.
[{v.UNPACK_CONTEXT}]
{unpack}
 same => n,Return()

; TRANSFER_CONTEXT, inherited by every desk phone rung: their transfer button (REFER) sends
; the caller to {v.TRANSFER_CONTEXT}, where the controller decides.
[{v.context(v.RING)}]
exten => s,1,Set(__TRANSFER_CONTEXT={v.TRANSFER_CONTEXT})
 same => n,Dial({var(v.DIAL)},{var(v.RING_SECONDS)})
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
{fax_call}

[{v.context(v.VOICEMAIL)}]
exten => s,1,Answer()
 same => n,VoiceMail({var(v.VOICEMAIL_BOX)}@{v.VOICEMAIL_CONTEXT},u)
 same => n,Hangup()
{fax_call}

[{v.context(v.VOICEMAIL_MAIN)}]
exten => s,1,Answer()
 same => n,VoiceMailMain({var(v.VOICEMAIL_BOX)}@{v.VOICEMAIL_CONTEXT},s)
 same => n,Hangup()

[{v.context(v.ANNOUNCE)}]
exten => s,1,Answer()
 same => n,Playback({var(v.ANNOUNCEMENT)})
 same => n,Hangup()
{fax_call}

; Closed (the number's hours): the closed announcement, then the number's voicemail.
[{v.context(v.CLOSED)}]
exten => s,1,Answer()
 same => n,Playback({notice_sounds}/{var(v.SOUND)})
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
{fax_call}

; Closed, with an answering service: the call goes there from the number, with its caller ID.
[{v.context(v.FORWARD)}]
{place_call}

[{v.context(v.UNKNOWN)}]
exten => s,1,Answer()
 same => n,Playback(ss-noservice)
 same => n,Hangup()

; Fax tones on a call taken as voice (the `fax` extensions above, reached through the carrier
; endpoint's fax_detect): the controller decides again, as a fax.  Without it, a fax number
; still receives and any other number refuses.
[{v.FAX_CALL_CONTEXT}]
exten => s,1,Set({v.DECISION}=)
 same => n,{_agi(v.AGI_FAX, var(v.DIALED), var(v.CALLER))}
{_decided(f"{v.CONTEXT_PREFIX}${{IF({var(v.IS_FAX)}?{v.FAX}:{v.REJECT_FAX})}},s,1")}

; T.38 when the sender can (the carrier endpoint offers it), G.711 audio otherwise (f).  The
; h extension reports every end (done, failed, the sender gone mid-page) to the controller,
; with res_fax's variables as arguments: the station ID (the sending machine chose it) and the
; error (spandsp's prose) are URI-encoded, so no comma or quote can split or bend the call.
[{v.context(v.FAX)}]
exten => s,1,Goto({v.FAX_EXTENSION},1)
; Named `fax`: the carrier endpoint's fax_detect leaves a call in a fax extension alone.
exten => {v.FAX_EXTENSION},1,Set({v.FAX_FILE}={FAX_SPOOL_FILE})
 same => n,Answer()
 same => n,ReceiveFax({var(v.FAX_FILE)},f)
 same => n,Hangup()
exten => h,1,Set({v.ARGS}={var(v.DIALED)},${{FAXSTATUS}},${{FAXPAGES}})
 same => n,Set({v.ARGS}={var(v.ARGS)},${{URIENCODE(${{FAXERROR}})}})
 same => n,Set({v.ARGS}={var(v.ARGS)},${{URIENCODE(${{REMOTESTATIONID}})}})
 same => n,{_agi(v.AGI_FAX_DONE, var(v.ARGS), var(v.CALLER))}

; Refused during the call: answered, then hung up once the sender's fax session has begun,
; so the sending machine reports a failed fax (a call refused unanswered is, to many, a
; busy line to redial at once).
[{v.context(v.REJECT_FAX)}]
exten => s,1,Answer()
 same => n,Wait(1)
 same => n,Hangup(21)

[{v.context(v.CALL)}]
{place_call}

; A colleague's or a team's extension: their registered desk phones at once, with the
; caller's name and extension; unanswered, the call ends (never the carrier, in any mode).
[{v.context(v.INTERNAL)}]
exten => s,1,GotoIf($["{var(v.CALLER_ID_NUM)}" = ""]?ring)
 same => n,Set(CALLERID(num)={var(v.CALLER_ID_NUM)})
 same => n,Set(CALLERID(name)={var(v.CALLER_ID_NAME)})
 same => n(ring),Dial({var(v.DIAL)},{var(v.RING_SECONDS)})
 same => n,Hangup()

{_transfers(d, pbx)}
[{v.context(v.REFUSE)}]
exten => s,1,Answer()
 same => n,Playback(cannot-complete-as-dialed)
 same => n,Hangup()

; The on-site notice of a 911 call, to a desk phone the controller calls: which desk phone
; and where (rendered per phone), then the time; twice.
[{v.NOTICE_CONTEXT}]
exten => s,1,Answer()
 same => n,Wait(1)
 same => n,Set({v.CLIP}={notice_sounds}/emergency-{var(v.NOTICE_ABOUT)})
 same => n,Playback({var(v.CLIP)})
 same => n,SayUnixTime({var(v.NOTICE_AT)},{d.practice.timezone},IMp)
 same => n,Wait(1)
 same => n,Playback({var(v.CLIP)})
 same => n,SayUnixTime({var(v.NOTICE_AT)},{d.practice.timezone},IMp)
 same => n,Hangup()
"""


def _transfers(d: Directory, pbx: AsteriskPbx) -> str:
    """A desk phone's blind transfer (REFER) of an outside call, and where it sends the
    caller: the target's desk phones, or out from the number; unanswered, the voicemail."""
    ring, out = v.context(v.TRANSFER_RING), v.context(v.TRANSFER_OUT)
    return f"""\
; A desk phone's blind transfer (REFER) of an outside call: the caller's channel comes here
; with the digits the phone sent; BLINDTRANSFER names the transferring phone's channel, and
; the number and caller are the ones this call came in with.  Without the controller the
; caller goes to the number's voicemail, never into silence.  (\\x2d: a literal - in FILTER.)
[{v.TRANSFER_CONTEXT}]
{_park_key(d)}
exten => _[*+0-9].,1,Set({v.DECISION}=)
 same => n,Set({v.ARGS}=${{FILTER(A-Za-z0-9/._\\x2d,${{BLINDTRANSFER}})}})
 same => n,Set({v.ARGS}={var(v.ARGS)},${{FILTER(*#+0-9,${{EXTEN}})}})
 same => n,Set({v.ARGS}={var(v.ARGS)},{var(v.DIALED)},{var(v.CALLER)})
 same => n,{_agi(v.AGI_TRANSFER, var(v.ARGS))}
{_decided(f"{ring},s,vm")}
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


def _park_timeout(d: Directory, pbx: AsteriskPbx) -> str:
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
 same => n,Set({v.DIAL}=${{PJSIP_DIAL_CONTACTS(${{PARKER:6}})}})
 same => n,ExecIf($["{var(v.DIAL)}" != ""]?Dial({var(v.DIAL)},{pbx.ring_seconds}))
 same => n(vm),GotoIf($["{var(v.VOICEMAIL_BOX)}" = ""]?{v.context(v.REFUSE)},s,1)
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
exten => s,1,Goto({v.context(v.VOICEMAIL)},s,1)
"""
