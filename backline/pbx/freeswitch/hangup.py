"""How a call FreeSWITCH handed to the controller ended, read from its hangup.  Pure.

What FreeSWITCH's source (signalwire/freeswitch) says, and what is read of it:

* ``CHANNEL_HANGUP`` fires when the channel goes down (switch_channel.c,
  switch_channel_perform_hangup), while the application it was running may still be
  finishing: a caller who hangs up during the recording is gone before mod_voicemail has
  kept the message.  ``CHANNEL_HANGUP_COMPLETE`` fires later, in the reporting state
  (switch_core_state_machine.c), once the session's thread has left the application; both
  carry every channel variable (switch_channel_event_set_extended_data).  So only the
  second is read.
* ``bridge`` leaves ``originate_disposition`` on the caller's channel (switch_ivr_originate.c):
  ``call accepted`` when a desk phone took the call, else the cause (``NO_ANSWER`` once
  ``call_timeout`` passed, ``ORIGINATOR_CANCEL`` when the caller hung up while they rang).
* ``voicemail`` (mod_voicemail.c, voicemail_leave_main) sets ``voicemail_message_len`` only
  once deliver_vm has kept the message, the one its ``vm::maintenance`` ``leave-message``
  event reports (``VM-UUID``: this call's uuid); a recording under ``min-record-len`` is
  deleted and sets nothing.

The missed call is the core's to decide (backline.core.voicemail.missed_at_hangup).
"""

from __future__ import annotations

from backline.core.voicemail import HungUp
from backline.pbx.freeswitch import names, wire


def is_hangup_of(event: wire.Event, uuid: str) -> bool:
    """Whether ``event`` is the ``CHANNEL_HANGUP_COMPLETE`` of the channel ``uuid``."""
    return event.name == names.HANGUP_COMPLETE and event.get("Unique-ID") == uuid


def hung_up(event: wire.Event) -> HungUp | None:
    """How the call ended, as its ``CHANNEL_HANGUP_COMPLETE`` says; None when the event
    carries no variable of ours (``backline_route``, which the rendered dialplan sets on every
    call before ``socket``): without the variables, whether a message was left cannot be
    told."""
    if not event.get(f"variable_{names.ROUTE}"):
        return None
    return HungUp(
        answered=event.get(f"variable_{names.ORIGINATE_DISPOSITION}") == names.CALL_ACCEPTED,
        message_left=bool(event.get(f"variable_{names.VOICEMAIL_MESSAGE_LEN}")))
