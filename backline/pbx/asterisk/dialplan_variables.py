"""Every Asterisk name the driver and the rendered dialplan (backline/render/asterisk_dialplan.py)
share: channel variables, contexts, FastAGI scripts, AstDB keys, the lamp's device state.

One place for every Asterisk name, as wazo_agid/dialplan_variables.py does; the names both
PBXs share come from backline/pbx/names.py.
"""

from backline.core import voicemail
from backline.pbx import names as shared

ACTION = "BACKLINE_ACTION"
DIAL = "BACKLINE_DIAL"
RING_SECONDS = "BACKLINE_RING_SECONDS"
VOICEMAIL_BOX = "BACKLINE_VMBOX"
CALLER_ID_NUM = "BACKLINE_CID_NUM"
CALLER_ID_NAME = "BACKLINE_CID_NAME"
DIAL_TO = "BACKLINE_TO"
FAX_FILE = "BACKLINE_FAX_FILE"
REFUSAL = "BACKLINE_REFUSAL"
SOUND = "BACKLINE_SOUND"  # a clip beside the announcement (backline.core.hours.closed_clip)

# A decision reaches the PBX as one variable, its fields in this order joined by
# FIELD_SEPARATOR, which the dialplan's [backline-unpack] cuts back into the variables above:
# one AGI round trip per call instead of one per variable, and a decision lands whole or not
# at all (a session that drops half-way leaves DECISION empty and the fallback plays).
DECISION = "BACKLINE_DECISION"
FIELD_SEPARATOR = "^"
FIELDS = (ACTION, DIAL, RING_SECONDS, VOICEMAIL_BOX, CALLER_ID_NUM, CALLER_ID_NAME, DIAL_TO,
          REFUSAL, SOUND)

# Values of ACTION: each names the context backline-VALUE in the rendered dialplan.
RING = "ring"
VOICEMAIL = "voicemail"
VOICEMAIL_MAIN = "voicemail-main"
ANNOUNCE = "announce"
UNKNOWN = "unknown"
FAX = "fax"
REJECT_FAX = "rejectfax"
CALL = "call"
INTERNAL = "internal"
REFUSE = "refuse"
CLOSED = "closed"    # the closed announcement, then voicemail
TRANSFER_RING = "transfer-ring"  # a transferred caller rings desk phones, then voicemail
TRANSFER_OUT = "transfer-out"  # a transferred caller goes out from the number, then voicemail
FORWARD = "forward"  # closed: to the answering service, with the number's caller ID

# The mode, mirrored into AstDB for the dialplan and the console (`database put backline mode
# outage` on the Asterisk CLI switches it), and the custom device state behind the BLF lamp.
DB_FAMILY = shared.MODE_FAMILY
DB_MODE = shared.MODE
DB_ACK = shared.ACK
DB_BY = shared.BY
DB_REASON = shared.REASON
LAMP = "Custom:backline-outage"
FEATURE_RESULT = "BACKLINE_FEATURE"
# The hours override's feature actions (*26 closed, *27 open), beside engage/end.
HOURS_CLOSED = shared.HOURS_CLOSED
HOURS_OPEN = shared.HOURS_OPEN

# Emergency calls (backline/render/asterisk.py; the rules in backline/core/emergency.py).
# Each desk phone's endpoint carries its callback number and caller-ID name (set_var), so 911
# needs no controller.  The controller sends the on-site notice from the call's DialBegin (or
# Hangup) event, or, when it was away, from the CDR row that ends in DESK_CONTEXT at an
# emergency number (backline/pbx/asterisk/emergency_leg.py, cdr.py).
EMERGENCY_CALLBACK = "BACKLINE_EMERGENCY_CALLBACK"
EMERGENCY_NAME = "BACKLINE_EMERGENCY_NAME"
# A blind transfer to 911: the transferring desk phone, whose callback number and name
# ([globals] EMERGENCY_CALLBACK_PHONE, EMERGENCY_NAME_PHONE) the caller's call presents.
EMERGENCY_PHONE = "BACKLINE_EMERGENCY_PHONE"
EMERGENCY_LOCATION = "BACKLINE_EMERGENCY_LOCATION"  # [globals] ..._PHONE: its geolocation.conf site
DESK_CONTEXT = "backline-desk"
# ``encryption: required``: what a desk phone's call was signalled and offered over, "1" for
# TLS then "1" for SRTP (CHANNEL(pjsip,secure), CHANNEL(rtp,secure)); anything but "11" is
# refused, emergency numbers excepted, and the UNSEALED_EVENT user event names the phone.
SEALED = "BACKLINE_SEALED"
UNSEALED_EVENT = "BacklineUnsealed"
# A carrier call the PBX took by its fail-safe (no decision came back over FastAGI): the
# dialplan raises this user event, with the fail-safe's action and the filtered dialled
# number and caller, so that a controller still logged in to AMI journals the call at once;
# one that was away imports it from the CDR at its next login.
FAILSAFE_EVENT = "BacklineFailsafe"
# Such a phone is rung through a twin endpoint, its name and this suffix (upper case: no
# desk phone name has any, so no twin is ever taken for a phone): the phone's own endpoint
# takes a plain-RTP offer (911 must go through), which makes Asterisk offer SRTP keys in
# plain RTP/AVP, and a phone that insists on SRTP refuses that offer (RFC 8643); the twin
# offers RTP/SAVP and accepts no answer without keys.
SRTP_TWIN = "-SRTP"
RING_ENDPOINT = "BACKLINE_RING_ENDPOINT"
# Where a desk phone's blind transfer (REFER) sends the outside caller: TRANSFER_CONTEXT is set
# (inherited) on every desk phone an outside call rings.  BLINDTRANSFER, set by Asterisk on the
# caller's channel, names the transferring phone's channel (PJSIP/ENDPOINT-SEQUENCE).
TRANSFER_CONTEXT = "backline-transfer"
# The number the transferred caller goes out from, inherited by the carrier's channel.
TRANSFER_CID_NUM = "BACKLINE_OUT_NUM"
TRANSFER_CID_NAME = "BACKLINE_OUT_NAME"
# A desk phone called with the notice: which phone placed the 911 call, and when (epoch).
NOTICE_CONTEXT = "backline-emergency-notice"
NOTICE_ABOUT = "BACKLINE_NOTICE_ABOUT"
NOTICE_AT = "BACKLINE_NOTICE_AT"

# -- the dialplan's own names (backline/render/asterisk_dialplan.py) --------------------------

# Contexts: desk phones and the carrier enter here; the rest are internal.  A decision's
# ACTION value names its context (``context(RING)`` is ``backline-ring``).
CONTEXT_PREFIX = "backline-"
CARRIER_CONTEXT = "backline-carrier"
FAX_NUMBERS_CONTEXT = "backline-fax-numbers"
FEATURE_CONTEXT = "backline-feature"
UNPACK_CONTEXT = "backline-unpack"
FAX_CALL_CONTEXT = "backline-faxcall"  # fax tones heard on a call taken as voice
TRANSFER_CID_CONTEXT = "backline-transfer-cid"  # a transfer's caller ID on the carrier's leg
VOICEMAIL_CONTEXT = "backline"  # voicemail.conf's context of the numbers' boxes
# Asterisk's own: the extension fax_detect sends a call to when it hears fax tones.
FAX_EXTENSION = "fax"


def context(action: str) -> str:
    """The context that carries out ACTION value ``action``."""
    return f"{CONTEXT_PREFIX}{action}"


# The FastAGI scripts the dialplan asks (agi://HOST:PORT/SCRIPT) and the driver serves.
AGI_INBOUND = "inbound"
AGI_OUTBOUND = "outbound"
AGI_FEATURE = "feature"
AGI_FAX = "fax"  # fax tones on a call taken as voice: decide again, as a fax
AGI_FAX_DONE = "faxdone"  # the end of a fax call, with res_fax's results
AGI_TRANSFER = "transfer"  # a desk phone's blind transfer of an outside call
AGI_CALL_END = "callend"  # an unanswered call ended: in voicemail, or while ringing
# `backline doctor`'s probe, no call: the FastAGI server answers it with AGI_DOCTOR_REPLY.
AGI_DOCTOR = "doctor"
AGI_DOCTOR_REPLY = "NOOP backline"
ENDED_IN_VOICEMAIL = voicemail.ENDED_IN_VOICEMAIL  # AGI_CALL_END's third argument
ENDED_RINGING = voicemail.ENDED_RINGING
# Appended to the call record's userfield (the dialled number, filtered to + and digits, so
# never holding the separator) by the voicemail's h extension when app_voicemail ran and kept
# no message: what the CDR import reads for a call whose end the controller did not hear.
USERFIELD_SEPARATOR = "/"
NO_MESSAGE = "no-message"

# Variables only the dialplan uses (globals, and the call's own between its steps).
AGI_URL = "BACKLINE_AGI"
ANNOUNCEMENT = "BACKLINE_ANNOUNCEMENT"
DIALED = "BACKLINE_DIALED"  # the dialled number, filtered
CALLER = "BACKLINE_CALLER"  # the caller ID, filtered
# On the carrier's channel of a call placed out: the party called (the decision's DIAL_TO),
# read when an attended transfer joins an outside caller to that call.
PARTY = "BACKLINE_PARTY"
# Asterisk's own, on every channel Dial() placed: what it dialled (``911@ENDPOINT``).  A desk
# phone's 911 sets no PARTY (nothing before its Dial()): this says its carrier channel's.
DIALLED_AS = "DIALEDPEERNUMBER"
DIVERTED = "BACKLINE_DIVERTED"  # the number the call was diverted from, filtered
FAILSAFE = "BACKLINE_FAILSAFE"  # the action when the controller cannot be reached
IS_FAX = "BACKLINE_IS_FAX"  # the dialled number carries fax
FEATURE_ACTION = "BACKLINE_FEATURE_ACTION"  # engage, end, closed, open
PIN = "BACKLINE_PIN"
ARGS = "BACKLINE_ARGS"
SWITCHED_ON = "BACKLINE_ON"  # a feature code turned something on (engage, closed)
CLIP = "BACKLINE_CLIP"
