"""Every FreeSWITCH name the driver and the rendered XML share, in one place (as the Asterisk
driver keeps its names in ``backline/pbx/asterisk/dialplan_variables.py``)."""

from __future__ import annotations

from typing import Final

from backline.pbx import names as shared

# Channel variables the rendered dialplan sets before handing the call to our socket. They
# come from our own rendered XML, never from the caller.
ROUTE: Final = "backline_route"  # "inbound" (carrier), "outbound" or "feature" (desk phone)
NUMBER: Final = "backline_number"  # the practice number the carrier dialled, as E.164
# Where `backline render` wrote the announcement, as FreeSWITCH sees the path: the closed
# clips lie beside it. The driver plays what the call carries, so it never guesses a path.
ANNOUNCEMENT: Final = "backline_announcement"
INBOUND: Final = "inbound"
OUTBOUND: Final = "outbound"
FEATURE: Final = "feature"
# *28 / *29 + PIN from a desk phone: which switch, and the digits (untrusted: compared by the
# controller, never sent back in a command).
FEATURE_ACTION: Final = "backline_feature"
FEATURE_PIN: Final = "backline_pin"
ENGAGE_CODE: Final = shared.ENGAGE_CODE
END_CODE: Final = shared.END_CODE
HOURS_CLOSED_CODE: Final = shared.HOURS_CLOSED_CODE  # force the hours closed until the next
HOURS_OPEN_CODE: Final = shared.HOURS_OPEN_CODE  # scheduled change, or open

# The mode, kept in mod_db (``db insert/backline/mode/outage``; ``${db(select/backline/mode)}``
# in the dialplan); ``fs_cli -x 'db insert/backline/mode/outage'`` is the console switch.
DB_REALM: Final = shared.MODE_FAMILY
DB_MODE: Final = shared.MODE
DB_ACK: Final = shared.ACK
DB_BY: Final = shared.BY
DB_REASON: Final = shared.REASON

# Contexts of the rendered dialplan.
CARRIER_CONTEXT: Final = "backline-carrier"
DESK_CONTEXT: Final = "backline-desk"
# The carrier's gateway in the sofia profile (outbound calls and 911 leave through it).
GATEWAY: Final = "carrier"

# Sounds: the announcement is rendered by `backline render`; the others ship with FreeSWITCH's
# core sounds (freeswitch-sounds-en-us-callie).
REFUSAL_SOUND: Final = "ivr/ivr-call_cannot_be_completed_as_dialed.wav"
OUTBOUND_REFUSAL_SOUND: Final = "ivr/ivr-call_cannot_be_completed_as_dialed.wav"
PIN_PROMPT_SOUND: Final = "ivr/ivr-please_enter_pin_followed_by_pound.wav"
PIN_INVALID_SOUND: Final = "ivr/ivr-that_was_an_invalid_entry.wav"
FEATURE_OK_SOUND: Final = "ivr/ivr-thank_you.wav"
FEATURE_REFUSED_SOUND: Final = "ivr/ivr-access_denied.wav"

# mod_voicemail: the profile the rendered voicemail.conf.xml holds and every ``voicemail``
# application names, and its CUSTOM event (VM_EVENT_MAINT in mod_voicemail.c), whose
# ``VM-Action: leave-message`` says a message was kept (backline/pbx/freeswitch/voicemail.py).
VOICEMAIL_PROFILE: Final = "default"
VOICEMAIL_EVENT: Final = "vm::maintenance"
# Read by ``voicemail`` as it starts (voicemail_leave_main): the greeting it plays if the file
# exists, in place of its own; and no instructions after it (ours asks for the message).
VOICEMAIL_GREETING: Final = "voicemail_greeting_path"
SKIP_INSTRUCTIONS: Final = "skip_instructions"

# How a call the controller sent to ring or to voicemail ended (backline/pbx/freeswitch/
# hangup.py): the event that carries the channel's variables once it is gone; bridge's
# result on the caller's channel (switch_ivr_originate.c), ``call accepted`` when a desk
# phone took the call; set by ``voicemail`` once it has kept a message (mod_voicemail.c,
# voicemail_leave_main, after deliver_vm).
HANGUP_COMPLETE: Final = "CHANNEL_HANGUP_COMPLETE"
ORIGINATE_DISPOSITION: Final = "originate_disposition"
CALL_ACCEPTED: Final = "call accepted"
VOICEMAIL_MESSAGE_LEN: Final = "voicemail_message_len"
# Set by the controller's first application on a call it sends to ring a number's desk phones
# or to its voicemail: the number it was decided for.  The channel keeps it to the end, so
# mod_cdr_csv's row of the call says the call may be missed even when the controller did not
# hear its end (backline/pbx/freeswitch/cdr.py); a call the PBX answered alone has none.
MISSABLE: Final = "backline_missable"

# Events the inbound link subscribes to: the results of bgapi jobs, mod_sofia's presence
# probes (a desk phone subscribed to the lamp), registrations of desk phones and messages
# left in voicemail (CUSTOM subclasses: every name after CUSTOM is taken as a subclass, so
# CUSTOM comes last).
SUBSCRIPTIONS: Final = ("BACKGROUND_JOB", "PRESENCE_PROBE", "CUSTOM", "sofia::register",
                        "sofia::unregister", "sofia::expire", "sofia::register_failure",
                        VOICEMAIL_EVENT)
# A REGISTER or INVITE whose digest sofia refused (backline/pbx/freeswitch/security.py).
REGISTER_FAILURE: Final = "sofia::register_failure"

# Fax (mod_spandsp). T.38 when the carrier offers it: ``fax_enable_t38`` lets rxfax take a
# T.38 re-INVITE, ``fax_enable_t38_request`` has FreeSWITCH send one itself; G.711 audio
# otherwise. The fax_* results need nothing more to reach us: every channel variable rides
# on CHANNEL_EXECUTE_COMPLETE and CHANNEL_HANGUP_COMPLETE, the call's own socket's events.
# (``verbose_events`` is an application, not a variable: ``set verbose_events=true`` did
# nothing.)
FAX_T38: Final = "fax_enable_t38"
FAX_T38_REQUEST: Final = "fax_enable_t38_request"
# What the dialplan marks a fax number's call with, kept in the CDR for the fail-safe import.
KIND: Final = "backline_kind"
KIND_FAX: Final = "fax"
# rxfax writes ``fax-UUID.tif`` here (the same name Asterisk's spool uses, so one intake
# serves both); the controller moves it into the fax directory.
FAX_FILE: Final = shared.FAX_FILE
# mod_spandsp's results, set on the channel at the end of rxfax (phase E) whatever ended it.
FAX_SUCCESS: Final = "fax_success"  # "1" or "0"
FAX_RESULT_CODE: Final = "fax_result_code"
FAX_RESULT_TEXT: Final = "fax_result_text"
FAX_PAGES: Final = "fax_document_transferred_pages"
FAX_STATION: Final = "fax_remote_station_id"  # whatever the sending machine says: untrusted
# Refused during the call: answered, then hung up once the sender's fax session has begun,
# so the sending machine reports a failed fax (cause 21, as the Asterisk dialplan does).
REJECT_WAIT_MS: Final = 1000
REJECT_CAUSE: Final = "CALL_REJECTED"

# The outage lamp (BLF): a desk phone's BLF key subscribes to the dialog state of ``*28`` (or
# ``*29``) at the SIP domain, as on Asterisk (whose hints on *28/*29 show
# Custom:backline-outage). In FreeSWITCH the subscription's user is the presence id, so the
# lamp is a PRESENCE_IN from ``*28@DOMAIN`` and one from ``*29@DOMAIN``. mod_sofia
# (sofia_presence.c, sofia_presence_sub_callback) writes a <dialog> into the NOTIFY only when
# the event has a ``unique-id``, and takes its state from ``answer-state`` unless
# ``channel-state`` is CS_HANGUP: "confirmed" lights the lamp, "terminated" puts it out (the
# headers mod_valet_parking.c sends for a parking lot's lamp).
LAMP_USERS: Final = (ENGAGE_CODE, END_CODE)
LAMP_DIALOG: Final = "backline-outage"  # the unique-id: the <dialog id> the phones see
LAMP_ON: Final = "confirmed"
LAMP_OFF: Final = "terminated"
