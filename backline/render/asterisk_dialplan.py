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

from backline.core.connections import AsteriskPbx
from backline.core.model import Carry, Directory
from backline.core.voicemail import greeting_clip
from backline.pbx import names as shared
from backline.pbx.asterisk import dialplan_variables as v
from backline.render.asterisk_desk_dialplan import (
    desk_side,
    emergency_callers,
    park_timeout,
    secure_desk,
    transfers,
)
from backline.render.asterisk_dialplan_steps import agi, decided, decided_action, var
from backline.render.asterisk_pjsip import carrier_endpoint

# Where ReceiveFax writes, in the PBX's own spool directory: it exists on every Asterisk (for
# a chroot instance, inside the root), so the PBX receives with or without the controller,
# which knows the same name from the call's uniqueid (backline.pbx.fax_intake.spool_name).
FAX_SPOOL_FILE = "${ASTSPOOLDIR}/" + shared.FAX_FILE.format(uuid="${UNIQUEID}")
# What of a caller ID reaches the controller (FILTER's ranges; commas cannot be in it) and
# how much: an E.164 number is 16 characters, "anonymous" and the like fit too.
CALLER_CHARS = "+*#0-9A-Za-z"
MAX_CALLER = 64


def _numbers_as_dialled(e164: str) -> tuple[str, ...]:
    """The spellings a carrier may put in the Request-URI for one of our numbers."""
    digits = e164.lstrip("+")
    forms = [e164, digits]
    if e164.startswith("+1"):
        forms.append(digits[1:])
    return tuple(forms)


def extensions_conf(d: Directory, pbx: AsteriskPbx, announcement: str) -> str:
    """``announcement``: the outage announcement's path as Asterisk plays it (no extension);
    the emergency notice clips and the closed announcements lie beside it."""
    return (_carrier_side(d, pbx, announcement) + desk_side(d, pbx)
            + _decisions(d, pbx, announcement) + secure_desk(d, pbx)
            + park_timeout(d, pbx))


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
    # No decision came back: the controller, if still on AMI, journals the call from this.
    failsafe_told = (f"UserEvent({v.FAILSAFE_EVENT},Failsafe: {var(v.FAILSAFE)},"
                     f"Dialled: {var(v.DIALED)},Caller: {var(v.CALLER)})")
    return f"""\
; Rendered by `backline render`: edit the practice YAML, not this file.
[general]
static=yes
writeprotect=yes
clearglobalvars=yes

[globals]
{v.AGI_URL}=agi://{pbx.agi.host}:{pbx.agi.port}
{v.ANNOUNCEMENT}={announcement}
{emergency_callers(d, pbx)}

; Calls from the carrier. The controller decides; if it cannot be reached (AGISTATUS is not
; SUCCESS, or no decision came back) the PBX answers on its own: the announcement, or fax
; reception for a fax number, and says so in a user event (a controller still on AMI journals
; the call from it).
; What the controller routes on comes as AGI arguments, filtered here: Asterisk writes the
; caller ID unescaped into the AGI header block, so a line break in it (a %0A in the From
; URI) could add header lines.  The caller ID and the number a call was diverted from
; (Diversion: agi_rdnis) on the channel are replaced by their filtered forms too (cut to 64
; characters), and a dialled string with anything but + and digits is no number of ours,
; but for the visual separators - and . of a tel: URI (RFC 3966), which are dropped (off the
; path of a plain number: only a string with something else in it takes these steps).
[{v.CARRIER_CONTEXT}]
exten => _[+0-9].,1,Set({v.DECISION}=)
 same => n,Set({v.DIALED}=${{FILTER(+0-9,${{EXTEN}})}})
 same => n,GotoIf($[${{LEN(${{EXTEN}})}} != ${{LEN({var(v.DIALED)})}}]?separated)
 same => n(number),Set({v.CALLER}=${{FILTER({CALLER_CHARS},${{CALLERID(num)}})}})
 same => n,Set({v.CALLER}=${{{v.CALLER}:0:{MAX_CALLER}}})
 same => n,Set(CALLERID(num)={var(v.CALLER)})
 same => n,Set({v.DIVERTED}=${{FILTER({CALLER_CHARS},${{REDIRECTING(from-num)}})}})
 same => n,Set(REDIRECTING(from-num,i)=${{{v.DIVERTED}:0:{MAX_CALLER}}})
 same => n,Set(CDR(userfield)={var(v.DIALED)})
 same => n,Set({v.FAILSAFE}={v.ANNOUNCE})
 same => n,Set({v.IS_FAX}=${{DIALPLAN_EXISTS({v.FAX_NUMBERS_CONTEXT},{var(v.DIALED)},1)}})
 same => n,ExecIf({var(v.IS_FAX)}?Set({v.FAILSAFE}={v.FAX}))
 same => n,{agi(v.AGI_INBOUND, var(v.DIALED), var(v.CALLER))}
{decided(f"{v.CONTEXT_PREFIX}{var(v.FAILSAFE)},s,1", failsafe_told)}
 same => n(separated),Set({TO_USER}=${{STRREPLACE(EXTEN,-,)}})
 same => n,Set({TO_USER}=${{STRREPLACE({TO_USER},.,)}})
 same => n,GotoIf($[${{LEN({var(TO_USER)})}} = ${{LEN({var(v.DIALED)})}}]?number:{unknown})
; No number in the Request-URI (a registration's contact, or no user part at all): the
; carrier named it in To, as many do on registered trunks.
exten => s,1,Goto({TO_CONTEXT},s,1)
exten => _[a-zA-Z*#].,1,Goto({TO_CONTEXT},s,1)
{account}; A fax sender gone between the decision and leaving this context is still reported,
; as a fax that ended (a fax decision is its action alone: never unpacked).
exten => h,1,GotoIf($["{decided_action()}" = "{v.FAX}"]?{fax_call})

; The number from To's user part (sip: or tel:, with or without parameters), taken only when
; it is + and digits and nothing else; anything else is no number of ours.  A tel: URI
; (RFC 3966) is cut by hand, PJSIP_PARSE_URI_FROM reads sip: and sips: only: what follows
; "tel:" up to > or ;, its visual separators - and . dropped.
[{TO_CONTEXT}]
exten => s,1,Set({TO_USER}=${{PJSIP_HEADER(read,To)}})
 same => n,GotoIf(${{REGEX("(^|<)tel:" {var(TO_USER)})}}?tel)
 same => n,Set({TO_USER}=${{PJSIP_PARSE_URI_FROM({TO_USER},user)}})
 same => n(number),Set({TO_NUMBER}=${{FILTER(+0-9,{var(TO_USER)})}})
 same => n,GotoIf($["{var(TO_NUMBER)}" = ""]?{unknown})
 same => n,GotoIf($[${{LEN({var(TO_USER)})}} != ${{LEN({var(TO_NUMBER)})}}]?{unknown})
{not_account} same => n,Goto({v.CARRIER_CONTEXT},{var(TO_NUMBER)},1)
 same => n(tel),Set({TO_USER}=${{STRREPLACE({TO_USER},tel:,^)}})
 same => n,Set({TO_USER}=${{CUT({TO_USER},^,2)}})
 same => n,Set({TO_USER}=${{CUT({TO_USER},>,1)}})
 same => n,Set({TO_USER}=${{CUT({TO_USER},\\;,1)}})
 same => n,Set({TO_USER}=${{STRREPLACE({TO_USER},-,)}})
 same => n,Set({TO_USER}=${{STRREPLACE({TO_USER},.,)}})
 same => n,Goto(number)

[{v.FAX_NUMBERS_CONTEXT}]
{fax_lines}
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
    no_message = (f"Set(CDR(userfield)={var(v.DIALED)}{v.USERFIELD_SEPARATOR}"
                  f"{v.NO_MESSAGE})")
    place_call = (f"exten => s,1,Set(CALLERID(num)={var(v.CALLER_ID_NUM)})\n"
                  f" same => n,Set(CALLERID(name)={var(v.CALLER_ID_NAME)})\n"
                  f" same => n,Set(_{v.PARTY}={var(v.DIAL_TO)})\n"
                  f" same => n,Dial(PJSIP/{var(v.DIAL_TO)}@{carrier})\n"
                  f" same => n,Hangup()")
    return f"""
; A decision arrives as one variable (one AGI round trip): cut it back into its fields.
[{v.UNPACK_CONTEXT}]
{unpack}
 same => n,Return()

; TRANSFER_CONTEXT, inherited by every desk phone rung: their transfer button (REFER) sends
; the caller to {v.TRANSFER_CONTEXT}, where the controller decides.
; The caller hanging up while the desk phones ring (none answered) is a missed call: the h
; extension tells the controller, which journals it for the inbox.
[{v.context(v.RING)}]
exten => s,1,Set(__TRANSFER_CONTEXT={v.TRANSFER_CONTEXT})
 same => n,Dial({var(v.DIAL)},{var(v.RING_SECONDS)})
 same => n,Goto({v.context(v.VOICEMAIL)},s,1)
{fax_call}
exten => h,1,GotoIf($["${{DIALSTATUS}}" = "ANSWER"]?done)
 same => n,{agi(v.AGI_CALL_END, var(v.VOICEMAIL_BOX), var(v.CALLER), v.ENDED_RINGING)}
 same => n(done),NoOp()

; The number's greeting (rendered beside the announcement), then the beep (no instructions:
; the greeting says them).  The message is kept in the PBX's spool (the controller may be
; away); at the end of the call the h extension tells the controller, which takes the
; message in (or journals a missed call if none was left).  First it marks the call record
; when app_voicemail ran (VMSTATUS) and kept no message (it sets VM_MESSAGEFILE only as it
; files one): the controller, if away, tells a missed call from the mark on its return.
[{v.context(v.VOICEMAIL)}]
exten => s,1,Answer()
 same => n,Playback({notice_sounds}/{greeting_clip("")}{var(v.VOICEMAIL_BOX)})
 same => n,VoiceMail({var(v.VOICEMAIL_BOX)}@{v.VOICEMAIL_CONTEXT},s)
 same => n,Hangup()
{fax_call}
exten => h,1,ExecIf($["${{VMSTATUS}}" != "" & "${{VM_MESSAGEFILE}}" = ""]?{no_message})
 same => n,{agi(v.AGI_CALL_END, var(v.VOICEMAIL_BOX), var(v.CALLER), v.ENDED_IN_VOICEMAIL)}

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
 same => n,{agi(v.AGI_FAX, var(v.DIALED), var(v.CALLER))}
{decided(f"{v.CONTEXT_PREFIX}${{IF({var(v.IS_FAX)}?{v.FAX}:{v.REJECT_FAX})}},s,1")}

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
 same => n,{agi(v.AGI_FAX_DONE, var(v.ARGS), var(v.CALLER))}

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

{transfers(d, pbx)}
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


